import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { ChatOpenAI } from "@langchain/openai";
import { generateObject, generateText, Output, streamObject } from "ai";
import OpenAI from "openai";
import { zodResponseFormat } from "openai/helpers/zod";
import { z } from "zod";
import { testModel } from "../helpers/models.js";
import { startServer, type RunningServer } from "../helpers/server.js";

/**
 * Structured outputs as the clients people use ask for them, against the real server and engine on a made
 * model with random weights: the grammar alone makes each answer parse, and each client's own validation (zod)
 * is the check.
 */

const MODEL = "lucena-coder-latest";

/** Small enough that a random model's answer ends well within max_tokens. */
const Ticket = z.object({
  title: z.string().max(8),
  priority: z.enum(["low", "medium", "high"]),
  estimate: z.int().min(1).max(13),
  done: z.boolean(),
  labels: z.array(z.enum(["bug", "ui", "api"])).max(2),
});

describe("structured outputs through real clients", () => {
  let server: RunningServer;
  before(async () => {
    server = await startServer({ model: testModel(), config: { models: [{ parallel: 2, context_size: 6144 }] } });
  });
  after(async () => {
    assert.equal(await server.stop(), 0);
  });
  const messages = [{ role: "user" as const, content: "File a ticket for the login bug." }];

  test("openai: chat.completions.parse with a zod schema, and json_object", async () => {
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: server.key, maxRetries: 0 });
    for (let seed = 1; seed <= 3; seed++) {
      const res = await client.chat.completions.parse({
        model: MODEL,
        messages,
        seed,
        max_tokens: 1024,
        response_format: zodResponseFormat(Ticket, "ticket"),
      });
      const parsed = res.choices[0]?.message.parsed;
      assert.ok(parsed, "parsed by the client");
      assert.deepEqual(Ticket.parse(parsed), parsed);
      assert.equal(res.choices[0]?.finish_reason, "stop");
    }
    const obj = await client.chat.completions.create({
      model: MODEL,
      messages,
      max_tokens: 1024,
      seed: 4,
      response_format: { type: "json_object" },
    });
    const text = obj.choices[0]?.message.content ?? "";
    if (obj.choices[0]?.finish_reason === "stop") {
      const value: unknown = JSON.parse(text);
      assert.equal(typeof value, "object");
    } else assert.match(text, /^\s*\{/, "a cut answer is still the start of an object");
  });

  test("Vercel AI SDK: generateObject, streamObject, generateText with Output.object", async () => {
    const provider = createOpenAICompatible({
      name: "lucena",
      baseURL: `${server.url}/v1`,
      apiKey: server.key,
      supportsStructuredOutputs: true,
    });
    const model = provider.chatModel(MODEL);
    const one = await generateObject({ model, schema: Ticket, messages, maxOutputTokens: 1024, seed: 1 });
    assert.deepEqual(Ticket.parse(one.object), one.object);

    const streamed = streamObject({ model, schema: Ticket, messages, maxOutputTokens: 1024, seed: 2 });
    let partials = 0;
    for await (const _ of streamed.partialObjectStream) partials++;
    const final = await streamed.object;
    assert.deepEqual(Ticket.parse(final), final);
    assert.ok(partials > 1, `${partials} partial objects`);

    const text = await generateText({
      model,
      output: Output.object({ schema: Ticket }),
      messages,
      maxOutputTokens: 1024,
      seed: 3,
    });
    assert.deepEqual(Ticket.parse(text.output), text.output);
  });

  test("LangChain: withStructuredOutput, jsonSchema and jsonMode methods", async () => {
    const llm = new ChatOpenAI({
      model: MODEL,
      apiKey: server.key,
      configuration: { baseURL: `${server.url}/v1` },
      maxTokens: 1024,
      maxRetries: 0,
    });
    const viaSchema = await llm.withStructuredOutput(Ticket, { method: "jsonSchema", name: "ticket" }).invoke(messages);
    assert.deepEqual(Ticket.parse(viaSchema), viaSchema);
    // jsonMode asks for a JSON object (no schema goes to the server): the answer parses as one.
    const raw = await llm
      .withStructuredOutput(z.record(z.string(), z.unknown()), { method: "jsonMode", includeRaw: true })
      .invoke(messages)
      .catch((err: unknown) => ({ error: err }));
    if ("error" in raw) {
      // A cut answer (max_tokens) cannot be parsed: only that may fail.
      assert.match(String(raw.error), /JSON|parse/i);
    } else assert.equal(typeof raw.parsed, "object");
  });
});
