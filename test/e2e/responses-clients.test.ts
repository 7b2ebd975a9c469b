import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createOpenAI } from "@ai-sdk/openai";
import { ChatOpenAI } from "@langchain/openai";
import { generateText, streamText } from "ai";
import OpenAI from "openai";
import { zodTextFormat } from "openai/helpers/zod";
import { z } from "zod";
import { City, twoStepToolLoop } from "../helpers/ai-sdk.js";
import { testModel } from "../helpers/models.js";
import { ledgerRow, startServer, type RunningServer } from "../helpers/server.js";

/**
 * The Responses API as the clients that speak it ask for it, against the real server and engine on a made model
 * with random weights: openai's responses.create and responses.parse, the Vercel AI SDK's default OpenAI provider
 * (which speaks the Responses API), LangChain's ChatOpenAI with useResponsesApi. The grammar makes structured
 * answers and forced calls valid; each client's own parsing is the check, and the ledger holds what each was told.
 */

const MODEL = "lucena-coder-latest";
const Ticket = z.object({
  title: z.string().max(8),
  priority: z.enum(["low", "high"]),
  estimate: z.int().min(1).max(5),
});

/** OpenAI's documented order of a text answer's events. */
const TEXT_SEQUENCE = [
  "response.created",
  "response.in_progress",
  "response.output_item.added",
  "response.content_part.added",
  "response.output_text.delta",
  "response.output_text.done",
  "response.content_part.done",
  "response.output_item.done",
];

describe("the Responses API through real clients", () => {
  let server: RunningServer;
  let client: OpenAI;
  before(async () => {
    server = await startServer({ model: testModel(), config: { models: [{ parallel: 2, context_size: 6144 }] } });
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: server.key, maxRetries: 0 });
  });
  after(async () => {
    assert.equal(await server.stop(), 0);
  });

  /** The ledger's row of a request. */
  const row = (requestId: string | null | undefined) => ledgerRow(server, requestId)!;

  test("openai responses.parse with a zod text format: the answer parses; the ledger holds its usage", async () => {
    for (let seed = 1; seed <= 3; seed++) {
      const res = await client.responses.parse({
        model: MODEL,
        input: "File a ticket for the login bug.",
        instructions: "Answer as JSON.",
        max_output_tokens: 512,
        text: { format: zodTextFormat(Ticket, "ticket") },
        // llama.cpp's and OpenAI chat's sampling fields are taken here too
        ...({ seed } as object),
      });
      assert.equal(res.status, "completed");
      assert.ok(res.output_parsed, "parsed by the client");
      assert.deepEqual(Ticket.parse(res.output_parsed), res.output_parsed);
      assert.deepEqual(JSON.parse(res.output_text), res.output_parsed);
      const r = row(res._request_id);
      assert.deepEqual([r.prompt_tokens, r.completion_tokens], [res.usage?.input_tokens, res.usage?.output_tokens]);
    }
  });

  test("openai responses.create streamed: OpenAI's event order, deltas making the final text", async () => {
    const stream = await client.responses.create({
      model: MODEL,
      input: "Say hello.",
      max_output_tokens: 24,
      stream: true,
    });
    const types: string[] = [];
    let text = "";
    let final: OpenAI.Responses.Response | null = null;
    for await (const ev of stream) {
      types.push(ev.type);
      if (ev.type === "response.output_text.delta") text += ev.delta;
      if (ev.type === "response.completed" || ev.type === "response.incomplete") final = ev.response;
    }
    // Runs of deltas collapse to one entry: the order, event by event, is OpenAI's.
    const collapsed = types.filter((t, i) => t !== "response.output_text.delta" || types[i - 1] !== t);
    assert.deepEqual(collapsed.slice(0, -1), TEXT_SEQUENCE);
    assert.ok(["response.completed", "response.incomplete"].includes(collapsed.at(-1)!));
    assert.ok(final);
    assert.equal(final.output_text ?? outputText(final), text);
    assert.equal(final.usage?.output_tokens, types.filter((t) => t === "response.output_text.delta").length);
  });

  test("openai: a function tool forced by tool_choice, its output sent back, the answer goes on", async () => {
    const tools: OpenAI.Responses.FunctionTool[] = [
      {
        type: "function",
        name: "weather",
        description: "The weather in a city",
        strict: true,
        parameters: {
          type: "object",
          properties: { city: { type: "string", maxLength: 12 }, days: { type: "integer", minimum: 1, maximum: 7 } },
          required: ["city", "days"],
          additionalProperties: false,
        },
      },
    ];
    const first = await client.responses.create({
      model: MODEL,
      input: "Weather in Paris for 3 days?",
      tools,
      tool_choice: { type: "function", name: "weather" },
      max_output_tokens: 200,
    });
    const call = first.output.find((o) => o.type === "function_call");
    assert.ok(call && call.type === "function_call", JSON.stringify(first.output));
    assert.equal(call.name, "weather");
    const args: unknown = JSON.parse(call.arguments);
    assert.deepEqual(City.parse(args), args);
    // Stateless: the whole conversation as input; and kept: previous_response_id.
    const output = { type: "function_call_output" as const, call_id: call.call_id, output: '{"temp": 21}' };
    const whole = await client.responses.create({
      model: MODEL,
      input: [{ role: "user", content: "Weather in Paris for 3 days?" }, call, output],
      tools,
      tool_choice: "none",
      max_output_tokens: 16,
    });
    const chained = await client.responses.create({
      model: MODEL,
      previous_response_id: first.id,
      input: [output],
      tools,
      tool_choice: "none",
      max_output_tokens: 16,
    });
    for (const r of [whole, chained]) {
      assert.ok(["completed", "incomplete"].includes(r.status!));
      assert.equal(r.output[0]?.type, "message");
    }
    assert.equal(whole.usage?.input_tokens, chained.usage?.input_tokens, "the same conversation, the same prompt");

    // Streamed, the call comes as OpenAI streams one.
    const stream = await client.responses.create({
      model: MODEL,
      input: "Weather in Rome?",
      tools,
      tool_choice: "required",
      max_output_tokens: 200,
      stream: true,
    });
    let streamedArgs = "";
    const types: string[] = [];
    for await (const ev of stream) {
      types.push(ev.type);
      if (ev.type === "response.function_call_arguments.delta") streamedArgs += ev.delta;
    }
    assert.deepEqual(
      types.filter((t, i) => t !== types[i - 1]),
      [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
      ],
    );
    const parsed: unknown = JSON.parse(streamedArgs);
    assert.deepEqual(City.parse(parsed), parsed);
  });

  test("Vercel AI SDK, default OpenAI provider: generateText, streamText, and a tool over two steps", async () => {
    const openai = createOpenAI({ baseURL: `${server.url}/v1`, apiKey: server.key });
    const model = openai(MODEL);
    const one = await generateText({ model, prompt: "Say hello.", maxOutputTokens: 16, seed: 1 });
    assert.ok(one.text.length > 0);
    assert.ok((one.usage.outputTokens ?? 0) > 0);

    // A conversation that goes on: the AI SDK sends the earlier answer as an item_reference by default.
    const next = await generateText({
      model,
      messages: [
        { role: "user", content: "Say hello." },
        ...one.response.messages,
        { role: "user", content: "Again." },
      ],
      maxOutputTokens: 8,
    });
    assert.match(JSON.stringify(next.request.body), /item_reference/);
    assert.ok((next.usage.inputTokens ?? 0) > (one.usage.inputTokens ?? 0), "the earlier answer is in the prompt");

    const streamed = streamText({ model, prompt: "Say hello.", maxOutputTokens: 16, seed: 2 });
    let text = "";
    for await (const delta of streamed.textStream) text += delta;
    assert.equal(text, await streamed.text);
    assert.ok(text.length > 0);

    await twoStepToolLoop(model);
  });

  test("openai models.retrieve: the model as the list has it; an unknown id is the client's NotFoundError", async () => {
    const one = await client.models.retrieve(MODEL);
    const list = await client.models.list();
    assert.deepEqual(one, list.data[0]);
    await assert.rejects(client.models.retrieve("no-such-model"), OpenAI.NotFoundError);
  });

  test("LangChain ChatOpenAI with useResponsesApi: invoke and stream", async () => {
    const chat = new ChatOpenAI({
      model: MODEL,
      apiKey: server.key,
      configuration: { baseURL: `${server.url}/v1` },
      useResponsesApi: true,
      maxTokens: 16,
      maxRetries: 0,
    });
    const msg = await chat.invoke("Say hello.");
    assert.equal(typeof msg.text, "string");
    assert.ok(msg.text.length > 0);
    assert.ok((msg.usage_metadata?.output_tokens ?? 0) > 0);
    let streamed = "";
    for await (const chunk of await chat.stream("Say hello.")) streamed += chunk.text;
    assert.ok(streamed.length > 0);
  });
});

function outputText(r: OpenAI.Responses.Response): string {
  return r.output
    .flatMap((o) => (o.type === "message" ? o.content : []))
    .map((c) => (c.type === "output_text" ? c.text : ""))
    .join("");
}
