import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { KeyVerifier, Principal } from "../../src/core/principal.js";
import { assertError, fakePromptTokens, post, requestId, setup } from "../helpers/fake-engine.js";

/** POST /v1/responses on the fake engine: the request read into the one prompt path, the answer's shapes. */

const MODEL = "lucena-coder-latest";
const responses = (app: Parameters<typeof post>[0], body: unknown, headers: Record<string, string> = {}) =>
  post(app, "/v1/responses", body, headers);

interface ResponseObject {
  id: string;
  object: string;
  status: string;
  model: string;
  incomplete_details: { reason: string } | null;
  output: {
    type: string;
    id: string;
    status: string;
    role?: string;
    content?: { type: string; text: string }[];
  }[];
  usage: { input_tokens: number; output_tokens: number; total_tokens: number };
  store: boolean;
}

/** The events of an SSE body: each `event:` name with its parsed data. */
function events(body: string): { name: string; data: Record<string, unknown> }[] {
  return body
    .split("\n\n")
    .filter((b) => b.startsWith("event: "))
    .map((b) => {
      const [ev, data] = b.split("\n");
      return {
        name: ev.slice("event: ".length),
        data: JSON.parse(data.slice("data: ".length)) as Record<string, unknown>,
      };
    });
}

describe("POST /v1/responses", () => {
  test("a string input: a response object with one message item and the usage", async (t) => {
    const { app, engine, config } = setup(t);
    const res = await responses(app, { model: MODEL, input: "Hello world" });
    assert.equal(res.statusCode, 200, res.body);
    requestId(res);
    const r = JSON.parse(res.body) as ResponseObject;
    assert.match(r.id, /^resp_/);
    assert.deepEqual([r.object, r.status, r.model, r.incomplete_details], ["response", "completed", MODEL, null]);
    assert.equal(r.output.length, 1);
    const [item] = r.output;
    assert.deepEqual([item.type, item.role, item.status], ["message", "assistant", "completed"]);
    assert.match(item.id, /^msg_/);
    assert.deepEqual(item.content, [{ type: "output_text", text: "Hello world!", annotations: [], logprobs: [] }]);
    const prompt = fakePromptTokens([{ content: config.system_prompt ?? "" }, { content: "Hello world" }]);
    assert.deepEqual(r.usage, {
      input_tokens: prompt,
      input_tokens_details: { cached_tokens: 0 },
      output_tokens: 3,
      output_tokens_details: { reasoning_tokens: 0 },
      total_tokens: prompt + 3,
    });
    assert.deepEqual(engine.encoder.calls.at(-1), [
      { role: "system", content: config.system_prompt },
      { role: "user", content: "Hello world" },
    ]);
  });

  test("instructions and input items become the conversation: messages, calls and their outputs", async (t) => {
    const { app, engine } = setup(t);
    const res = await responses(app, {
      model: MODEL,
      instructions: "Be brief.",
      input: [
        { role: "developer", content: "Use metric units." },
        {
          type: "message",
          role: "user",
          content: [
            { type: "input_text", text: "Weather " },
            { type: "input_text", text: "in Paris?" },
          ],
        },
        { role: "assistant", content: [{ type: "output_text", text: "Let me look." }] },
        { type: "function_call", call_id: "call_1", name: "get_weather", arguments: '{"city":"Paris"}' },
        { type: "function_call", call_id: "call_2", name: "get_time", arguments: "{}" },
        { type: "function_call_output", call_id: "call_1", output: '{"temp":21}' },
        { type: "function_call_output", call_id: "call_2", output: [{ type: "input_text", text: "noon" }] },
      ],
    });
    assert.equal(res.statusCode, 200, res.body);
    assert.deepEqual(engine.encoder.calls.at(-1), [
      { role: "system", content: "Be brief." },
      { role: "system", content: "Use metric units." },
      { role: "user", content: "Weather in Paris?" },
      {
        role: "assistant",
        content: "Let me look.",
        tool_calls: [
          { id: "call_1", type: "function", function: { name: "get_weather", arguments: '{"city":"Paris"}' } },
          { id: "call_2", type: "function", function: { name: "get_time", arguments: "{}" } },
        ],
      },
      { role: "tool", tool_call_id: "call_1", content: '{"temp":21}' },
      { role: "tool", tool_call_id: "call_2", content: "noon" },
    ]);
  });

  test("text.format, flat function tools, tool_choice and sampling reach the engine as chat's do", async (t) => {
    const { app, engine } = setup(t);
    const schema = { type: "object", properties: { a: { type: "integer" } }, required: ["a"] };
    const res = await responses(app, {
      model: MODEL,
      input: "x",
      temperature: 0.2,
      top_p: 0.5,
      max_output_tokens: 50,
      text: { format: { type: "json_schema", name: "thing", schema, strict: true } },
    });
    assert.equal(res.statusCode, 200, res.body);
    const o = engine.lastCall;
    assert.deepEqual([o.temperature, o.topP, o.maxTokens], [0.2, 0.5, 50]);
    assert.deepEqual(o.format, { kind: "json_schema", schema, name: "thing", strict: true, field: "response_format" });

    const tools = [{ type: "function", name: "get", description: "Get it", parameters: schema, strict: true }];
    const withTools = await responses(app, {
      model: MODEL,
      input: "x",
      tools,
      tool_choice: { type: "function", name: "get" },
      parallel_tool_calls: false,
    });
    assert.equal(withTools.statusCode, 200, withTools.body);
    assert.deepEqual(engine.lastCall.tools, {
      tools: [{ name: "get", description: "Get it", parameters: schema, strict: true }],
      choice: { name: "get" },
      parallel: false,
    });
    const echo = JSON.parse(withTools.body) as { tools: unknown; tool_choice: unknown; parallel_tool_calls: boolean };
    assert.deepEqual(
      [echo.tools, echo.tool_choice, echo.parallel_tool_calls],
      [tools, { type: "function", name: "get" }, false],
    );
  });

  test("max_output_tokens reached: status incomplete, reason max_output_tokens", async (t) => {
    const { app } = setup(t);
    const r = JSON.parse(
      (await responses(app, { model: MODEL, input: "x", max_output_tokens: 2 })).body,
    ) as ResponseObject;
    assert.deepEqual(
      [r.status, r.incomplete_details, r.output[0].status],
      ["incomplete", { reason: "max_output_tokens" }, "incomplete"],
    );
    assert.equal(r.output[0].content![0].text, "Hello world");
    assert.equal(r.usage.output_tokens, 2);
  });

  test("streamed: OpenAI's event sequence, numbered, the deltas making the text, the usage at the end", async (t) => {
    const { app } = setup(t);
    const res = await responses(app, { model: MODEL, input: "Hello world", stream: true });
    assert.equal(res.statusCode, 200);
    assert.match(String(res.headers["content-type"]), /^text\/event-stream/);
    const evs = events(res.body);
    assert.deepEqual(
      evs.map((e) => e.name),
      [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
      ],
    );
    evs.forEach((e, i) => {
      assert.equal(e.data.type, e.name, "each event's data names its type");
      assert.equal(e.data.sequence_number, i);
    });
    assert.ok(!res.body.includes("[DONE]"), "the Responses stream has no [DONE]");
    const deltas = evs.filter((e) => e.name === "response.output_text.delta").map((e) => e.data.delta);
    assert.deepEqual(deltas, ["Hello", " world", "!"]);
    const created = evs[0].data.response as ResponseObject;
    const done = evs.at(-1)!.data.response as ResponseObject;
    assert.deepEqual([created.status, created.output, created.usage], ["in_progress", [], null]);
    assert.equal(done.id, created.id);
    assert.equal(done.status, "completed");
    assert.equal(done.output[0].content![0].text, "Hello world!");
    assert.equal(done.usage.output_tokens, 3);
    const added = evs[2].data as { item: { id: string; content: unknown[] } };
    assert.equal(added.item.id, done.output[0].id);
    assert.deepEqual(added.item.content, []);
    assert.equal((evs[7].data as { text: string }).text, "Hello world!");
  });

  test("streamed to max_output_tokens: response.incomplete ends the stream", async (t) => {
    const { app } = setup(t);
    const evs = events((await responses(app, { model: MODEL, input: "x", stream: true, max_output_tokens: 1 })).body);
    assert.equal(evs.at(-1)!.name, "response.incomplete");
    assert.deepEqual((evs.at(-1)!.data.response as ResponseObject).incomplete_details, { reason: "max_output_tokens" });
  });

  test("a failure after the headers: an error event, then response.failed", async (t) => {
    const { app, engine } = setup(t);
    engine.failWith = new Error("boom");
    engine.failAfter = 1;
    const evs = events((await responses(app, { model: MODEL, input: "x", stream: true })).body);
    assert.deepEqual(
      evs.slice(-2).map((e) => e.name),
      ["error", "response.failed"],
    );
    const failed = evs.at(-1)!.data.response as { status: string; error: { code: string; message: string } };
    assert.equal(failed.status, "failed");
    assert.equal(failed.error.code, "server_error");
  });

  test("previous_response_id and item_reference go on from a kept answer, for the same key only", async (t) => {
    const other = "sk-lucena-otherkey00000000000000000000000";
    const principal: Principal = {
      keyId: "key_other",
      limits: { rpm: null, tpm: null, concurrency: null },
      models: null,
    };
    const keys: KeyVerifier = { verify: (k) => (k === other ? principal : null) };
    const { app, engine } = setup(t, { keys });
    const first = JSON.parse((await responses(app, { model: MODEL, input: "Hi there" })).body) as ResponseObject;
    assert.equal(first.store, true);
    const res = await responses(app, { model: MODEL, previous_response_id: first.id, input: "And then?" });
    assert.equal(res.statusCode, 200, res.body);
    assert.deepEqual(engine.encoder.calls.at(-1)!.slice(1), [
      { role: "user", content: "Hi there" },
      { role: "assistant", content: "Hello world!" },
      { role: "user", content: "And then?" },
    ]);
    const ref = await responses(app, {
      model: MODEL,
      input: [
        { role: "user", content: "Hi there" },
        { type: "item_reference", id: first.output[0].id },
        { role: "user", content: "More" },
      ],
    });
    assert.equal(ref.statusCode, 200, ref.body);
    assert.deepEqual(engine.encoder.calls.at(-1)![2], { role: "assistant", content: "Hello world!" });

    const asOther = { authorization: `Bearer ${other}` };
    assertError(
      await responses(app, { model: MODEL, previous_response_id: first.id, input: "x" }, asOther),
      400,
      "invalid_request_error",
      { param: "previous_response_id" },
    );
    assertError(
      await responses(app, { model: MODEL, input: [{ type: "item_reference", id: first.output[0].id }] }, asOther),
      400,
      "invalid_request_error",
      { param: "input[0].id" },
    );
    const unkept = JSON.parse(
      (await responses(app, { model: MODEL, input: "x", store: false })).body,
    ) as ResponseObject;
    assert.equal(unkept.store, false);
    assertError(
      await responses(app, { model: MODEL, previous_response_id: unkept.id, input: "x" }),
      400,
      "invalid_request_error",
      { param: "previous_response_id" },
    );
  });

  const BAD: [string, Record<string, unknown>, string][] = [
    ["no input", { model: MODEL }, "input"],
    ["messages instead of input", { model: MODEL, input: "x", messages: [] }, "messages"],
    ["max_tokens instead of max_output_tokens", { model: MODEL, input: "x", max_tokens: 5 }, "max_tokens"],
    [
      "an unknown previous_response_id",
      { model: MODEL, input: "x", previous_response_id: "resp_nope" },
      "previous_response_id",
    ],
    [
      "a reasoning input item",
      { model: MODEL, input: [{ type: "reasoning", id: "rs_1", summary: [] }] },
      "input[0].type",
    ],
    [
      "an image part",
      { model: MODEL, input: [{ role: "user", content: [{ type: "input_image", image_url: "x" }] }] },
      "input[0].content[0].type",
    ],
    [
      "a function_call_output without call_id",
      { model: MODEL, input: [{ type: "function_call_output", output: "x" }] },
      "input[0].call_id",
    ],
    ["a role tool message", { model: MODEL, input: [{ role: "tool", content: "x" }] }, "input[0].role"],
    ["a web_search tool", { model: MODEL, input: "x", tools: [{ type: "web_search" }] }, "tools[0].type"],
    [
      "a function tool with a bad name",
      { model: MODEL, input: "x", tools: [{ type: "function", name: "a b" }] },
      "tools[0].name",
    ],
    [
      "text.format json_schema without a name",
      { model: MODEL, input: "x", text: { format: { type: "json_schema", schema: {} } } },
      "text.format.name",
    ],
    [
      "text.format of an unknown type",
      { model: MODEL, input: "x", text: { format: { type: "yaml" } } },
      "text.format.type",
    ],
    ["temperature 3", { model: MODEL, input: "x", temperature: 3 }, "temperature"],
    [
      "max_output_tokens over the model's limit",
      { model: MODEL, input: "x", max_output_tokens: 100_000 },
      "max_output_tokens",
    ],
    ["typical_p", { model: MODEL, input: "x", typical_p: 0.5 }, "typical_p"],
    ["background", { model: MODEL, input: "x", background: true }, "background"],
    ["reasoning effort", { model: MODEL, input: "x", reasoning: { effort: "high" } }, "reasoning"],
    ["an include of sources", { model: MODEL, input: "x", include: ["web_search_call.action.sources"] }, "include"],
    ["top_logprobs 21", { model: MODEL, input: "x", top_logprobs: 21 }, "top_logprobs"],
  ];
  for (const [name, body, param] of BAD) {
    test(`${name}: 400 naming '${param}', nothing generated`, async (t) => {
      const { app, engine } = setup(t);
      assertError(await responses(app, body), 400, "invalid_request_error", { param });
      assert.equal(engine.calls.length, 0);
    });
  }

  test("an unknown model: the same 404 as chat", async (t) => {
    const { app } = setup(t);
    assertError(await responses(app, { model: "nope", input: "x" }), 404, "not_found");
  });
});
