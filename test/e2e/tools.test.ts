import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { ChatOpenAI } from "@langchain/openai";
import { Ajv2020 } from "ajv/dist/2020.js";
import OpenAI from "openai";
import type { ChatCompletionMessageParam, ChatCompletionTool } from "openai/resources/chat/completions";
import { City, twoStepToolLoop } from "../helpers/ai-sdk.js";
import { testModel } from "../helpers/models.js";
import { startServer, type RunningServer } from "../helpers/server.js";

/**
 * Tool calling against the real server and engine on a made model with random weights: a forced call (tool_choice
 * "required" or a named tool) is held by a grammar from its first token, so even random weights make a valid call.
 */

const MODEL = "lucena-coder-latest";
const WEATHER = {
  type: "object",
  properties: {
    city: { type: "string", maxLength: 12 },
    days: { type: "integer", minimum: 1, maximum: 7 },
    unit: { enum: ["c", "f"] },
  },
  required: ["city", "days", "unit"],
  additionalProperties: false,
} as const;
const TOOLS: ChatCompletionTool[] = [
  { type: "function", function: { name: "get_weather", description: "The weather in a city", parameters: WEATHER } },
  {
    type: "function",
    function: {
      name: "get_time",
      description: "The time in a city",
      parameters: { type: "object", properties: { city: { type: "string", maxLength: 12 } }, required: ["city"] },
    },
  },
];
/** The same schema, typed as openai's runner takes it (a mutable JSON Schema). */
const WEATHER_PARAMETERS: Record<string, unknown> = WEATHER;
const validate = new Ajv2020({ strict: false }).compile(WEATHER);

describe("tool calls through the openai client", () => {
  let server: RunningServer;
  let client: OpenAI;
  before(async () => {
    server = await startServer({ model: testModel(), config: { models: [{ parallel: 2, context_size: 6144 }] } });
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: server.key, maxRetries: 0 });
  });
  after(async () => {
    assert.equal(await server.stop(), 0);
  });
  const messages: ChatCompletionMessageParam[] = [{ role: "user", content: "What is the weather in Paris?" }];

  test("a named tool: a valid call, finish_reason tool_calls, usage counted", async () => {
    for (let seed = 1; seed <= 5; seed++) {
      const res = await client.chat.completions.create({
        model: MODEL,
        messages,
        tools: TOOLS,
        tool_choice: { type: "function", function: { name: "get_weather" } },
        max_tokens: 400,
        seed,
      });
      const choice = res.choices[0];
      assert.equal(choice.finish_reason, "tool_calls");
      assert.equal(choice.message.content, null);
      const calls = choice.message.tool_calls ?? [];
      assert.ok(calls.length >= 1);
      for (const call of calls) {
        assert.equal(call.type, "function");
        if (call.type !== "function") continue;
        assert.match(call.id, /^call_/);
        assert.equal(call.function.name, "get_weather");
        const args: unknown = JSON.parse(call.function.arguments);
        assert.ok(validate(args), `${call.function.arguments}: ${JSON.stringify(validate.errors)}`);
      }
      assert.ok((res.usage?.completion_tokens ?? 0) > 0);
    }
  });

  test("required, streamed: the client's accumulated calls are valid", async () => {
    const stream = client.chat.completions.stream({
      model: MODEL,
      messages,
      tools: TOOLS,
      tool_choice: "required",
      parallel_tool_calls: false,
      max_tokens: 400,
      seed: 11,
    });
    const final = await stream.finalChatCompletion();
    const choice = final.choices[0];
    assert.equal(choice.finish_reason, "tool_calls");
    const calls = choice.message.tool_calls ?? [];
    assert.equal(calls.length, 1, "parallel_tool_calls false: one call");
    const call = calls[0];
    assert.ok(call.type === "function" && ["get_weather", "get_time"].includes(call.function.name));
    assert.doesNotThrow(() => JSON.parse(call.type === "function" ? call.function.arguments : ""));
  });

  test("streamed, a call's arguments come in pieces as they are generated, after a first chunk with its name", async () => {
    const res = await fetch(`${server.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${server.key}`, "content-type": "application/json" },
      body: JSON.stringify({
        model: MODEL,
        messages,
        tools: TOOLS,
        tool_choice: { type: "function", function: { name: "get_weather" } },
        parallel_tool_calls: false,
        stream: true,
        max_tokens: 400,
        seed: 3,
      }),
    });
    const frames = (await res.text())
      .split("\n\n")
      .filter((f) => f.startsWith("data: {"))
      .map((f) => JSON.parse(f.slice(6)) as { choices: { delta: { tool_calls?: Record<string, unknown>[] } }[] });
    const pieces = frames.flatMap((f) => f.choices[0]?.delta.tool_calls ?? []);
    assert.ok(pieces.length >= 3, `${pieces.length} tool_calls chunks`);
    const [first, ...rest] = pieces;
    assert.deepEqual(Object.keys(first ?? {}).sort(), ["function", "id", "index", "type"]);
    assert.deepEqual(first?.function, { name: "get_weather", arguments: "" });
    const args = rest.map((p) => (p.function as { arguments: string }).arguments).join("");
    assert.ok(validate(JSON.parse(args)), args);
  });

  test("a conversation with a call and its result goes on; count and completion agree, tools included", async () => {
    const conversation: ChatCompletionMessageParam[] = [
      ...messages,
      {
        role: "assistant",
        content: null,
        tool_calls: [
          {
            id: "call_1",
            type: "function",
            function: { name: "get_weather", arguments: '{"city":"Paris","days":1,"unit":"c"}' },
          },
        ],
      },
      { role: "tool", tool_call_id: "call_1", content: '{"temp": 21}' },
    ];
    const body = { model: MODEL, messages: conversation, tools: TOOLS, max_tokens: 8 };
    const res = await client.chat.completions.create(body);
    assert.ok(res.choices[0]);
    const count = await fetch(`${server.url}/v1/tokens/count`, {
      method: "POST",
      headers: { authorization: `Bearer ${server.key}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const counted = (await count.json()) as { usage: { prompt_tokens: number } };
    assert.equal(counted.usage.prompt_tokens, res.usage?.prompt_tokens);
    const without = await fetch(`${server.url}/v1/tokens/count`, {
      method: "POST",
      headers: { authorization: `Bearer ${server.key}`, "content-type": "application/json" },
      body: JSON.stringify({ ...body, tools: undefined }),
    });
    const plain = (await without.json()) as { usage: { prompt_tokens: number } };
    assert.ok(counted.usage.prompt_tokens > plain.usage.prompt_tokens, "the tools take room in the prompt");
  });
});

describe("tool calls through the AI SDK, LangChain and openai's runner", () => {
  let server: RunningServer;
  before(async () => {
    server = await startServer({ model: testModel(), config: { models: [{ parallel: 2, context_size: 6144 }] } });
  });
  after(async () => {
    assert.equal(await server.stop(), 0);
  });

  test("AI SDK generateText: a call, its result sent back, then an answer (two steps)", async () => {
    const provider = createOpenAICompatible({ name: "lucena", baseURL: `${server.url}/v1`, apiKey: server.key });
    const result = await twoStepToolLoop(provider.chatModel(MODEL));
    assert.ok(result.steps[1]?.request.body, "the second step sent the call and its result back");
  });

  test("LangChain: bindTools and withStructuredOutput (functionCalling)", async () => {
    const llm = new ChatOpenAI({
      model: MODEL,
      apiKey: server.key,
      configuration: { baseURL: `${server.url}/v1` },
      maxTokens: 300,
      maxRetries: 0,
    });
    const weather = { name: "weather", description: "The weather in a city", schema: City };
    const msg = await llm.bindTools([weather], { tool_choice: "weather" }).invoke("Weather in Paris?");
    assert.equal(msg.tool_calls?.[0]?.name, "weather");
    assert.deepEqual(City.parse(msg.tool_calls?.[0]?.args), msg.tool_calls?.[0]?.args);
    const structured = await llm
      .withStructuredOutput(City, { method: "functionCalling", name: "city" })
      .invoke("Paris");
    assert.deepEqual(City.parse(structured), structured);
  });

  test("openai: runTools calls the function with parsed arguments", async () => {
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: server.key, maxRetries: 0 });
    const calls: unknown[] = [];
    const runner = client.chat.completions.runTools({
      model: MODEL,
      messages: [{ role: "user", content: "Weather in Paris?" }],
      max_tokens: 200,
      tool_choice: { type: "function", function: { name: "weather" } },
      tools: [
        {
          type: "function",
          function: {
            name: "weather",
            description: "The weather in a city",
            parameters: WEATHER_PARAMETERS,
            parse: (text: string) => JSON.parse(text) as unknown,
            function: (args: unknown) => {
              calls.push(args);
              return { temp: 21 };
            },
          },
        },
      ],
    });
    await runner.done();
    assert.ok(calls.length >= 1);
    for (const args of calls) assert.ok(validate(args), JSON.stringify(args));
  });
});
