import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { SAMPLING_DEFAULTS } from "../../src/engines/engine.js";
import { errors } from "../../src/core/errors.js";
import {
  assertError,
  chat,
  count,
  FakeEngine,
  fakePromptTokens,
  requestId,
  setup,
  sseData,
  sseEvents,
  TEST_MODEL,
  USER_HELLO,
  tokensOf,
} from "../helpers/fake-engine.js";

const MODEL = "lucena-coder-latest";
const GOOD = { model: MODEL, messages: USER_HELLO };
const GOOD_PROMPT = fakePromptTokens([{ content: TEST_MODEL.system_prompt! }, ...USER_HELLO]);

describe("503 while the model cannot serve", () => {
  for (const [route, extra] of [
    ["chat JSON", {}],
    ["chat stream", { stream: true }],
    ["count", {}],
  ] as const) {
    test(`${route}: engine loading → 503 server_error with Retry-After, then 200 once ready`, async (t) => {
      const engine = new FakeEngine({ status: "loading" });
      const { app } = setup(t, { engine });
      const send = () => (route === "count" ? count(app, { ...GOOD, ...extra }) : chat(app, { ...GOOD, ...extra }));
      const res = await send();
      const e = assertError(res, 503, "server_error");
      assert.match(e.message, /loading/);
      assert.match(e.message, new RegExp(MODEL));
      assert.match(String(res.headers["retry-after"]), /^[1-9][0-9]*$/);
      assert.equal(engine.calls.length, 0);
      await engine.load();
      const ok = await send();
      assert.equal(ok.statusCode, 200, ok.body);
    });
  }

  test("engine failed → 503 server_error with Retry-After (chat and count)", async (t) => {
    const { app } = setup(t, { engine: new FakeEngine({ status: "failed" }) });
    for (const res of [await chat(app, GOOD), await chat(app, { ...GOOD, stream: true }), await count(app, GOOD)]) {
      assertError(res, 503, "server_error");
      assert.match(String(res.headers["retry-after"]), /^[1-9][0-9]*$/);
    }
  });

  for (const [name, extra] of [
    ["JSON", {}],
    ["stream", { stream: true }],
  ] as const) {
    test(`${name}: the engine's queue is full → 503 server_error with Retry-After, before any stream starts`, async (t) => {
      const { app, engine } = setup(t);
      engine.queueFull = true;
      const res = await chat(app, { ...GOOD, ...extra });
      assertError(res, 503, "server_error", { message: errors.queueFull(MODEL, 2).message });
      assert.equal(res.headers["retry-after"], "2");
      assert.ok(!res.payload.includes(": connected"));
      engine.queueFull = false;
      const ok = await chat(app, { ...GOOD, ...extra });
      assert.equal(ok.statusCode, 200);
    });
  }

  test("the count does not need a free sequence: it answers while the queue is full", async (t) => {
    const { app, engine } = setup(t);
    engine.queueFull = true;
    const res = await count(app, GOOD);
    assert.equal(res.statusCode, 200);
  });
});

describe("sampling options reach the engine", () => {
  test("temperature, top_p, top_k, seed, stop, penalties and max_tokens are passed through", async (t) => {
    const { app, engine } = setup(t);
    const res = await chat(app, {
      ...GOOD,
      temperature: 1.3,
      top_p: 0.8,
      top_k: 7,
      seed: 42,
      stop: ["END", "##"],
      presence_penalty: 0.5,
      frequency_penalty: -0.25,
      max_tokens: 50,
    });
    assert.equal(res.statusCode, 200);
    const o = engine.lastCall;
    assert.equal(o.temperature, 1.3);
    assert.equal(o.topP, 0.8);
    assert.equal(o.topK, 7);
    assert.equal(o.seed, 42);
    assert.deepEqual(o.stop, ["END", "##"]);
    assert.equal(o.presencePenalty, 0.5);
    assert.equal(o.frequencyPenalty, -0.25);
    assert.equal(o.maxTokens, 50);
    assert.equal(o.signal instanceof AbortSignal, true);
  });

  test("llama.cpp's min_p and ignore_eos pass through; absent, the engine's default min_p and no ignore_eos", async (t) => {
    const { app, engine } = setup(t);
    assert.equal((await chat(app, { ...GOOD, min_p: 0.2, ignore_eos: true })).statusCode, 200);
    assert.deepEqual([engine.lastCall.minP, engine.lastCall.ignoreEos], [0.2, true]);
    assert.equal((await chat(app, GOOD)).statusCode, 200);
    assert.deepEqual([engine.lastCall.minP, engine.lastCall.ignoreEos], [null, false]);
  });

  test("repeat_penalty over repeat_last_n (default 64), or vLLM's repetition_penalty over all", async (t) => {
    const { app, engine } = setup(t);
    const cases: [Record<string, unknown>, unknown][] = [
      [{}, null],
      [{ repeat_penalty: 1 }, null],
      [{ repeat_penalty: 1.1 }, { penalty: 1.1, lastN: 64, field: "repeat_penalty" }],
      [
        { repeat_penalty: 1.3, repeat_last_n: -1 },
        { penalty: 1.3, lastN: -1, field: "repeat_penalty" },
      ],
      [{ repeat_penalty: 1.3, repeat_last_n: 0 }, null],
      [{ repeat_last_n: 16 }, null],
      [
        { repeat_last_n: 16, presence_penalty: 0.5 },
        { penalty: 1, lastN: 16, field: "repeat_penalty" },
      ],
      [{ repetition_penalty: 1.2 }, { penalty: 1.2, lastN: -1, field: "repetition_penalty" }],
      [{ repetition_penalty: 1 }, null],
    ];
    for (const [extra, expected] of cases) {
      const res = await chat(app, { ...GOOD, ...extra });
      assert.equal(res.statusCode, 200, res.body);
      assert.deepEqual(engine.lastCall.repeatPenalty, expected, JSON.stringify(extra));
    }
  });

  test("response_format, grammar and json_schema reach the engine as one format", async (t) => {
    const { app, engine } = setup(t);
    const schema = { type: "object", properties: { a: { type: "integer" } } };
    const cases: [Record<string, unknown>, unknown][] = [
      [{}, null],
      [{ response_format: { type: "text" } }, null],
      [{ response_format: { type: "json_object" } }, { kind: "json_object" }],
      [
        { response_format: { type: "json_schema", json_schema: { name: "a", schema, strict: true } } },
        { kind: "json_schema", schema, name: "a", strict: true, field: "response_format" },
      ],
      [{ grammar: 'root ::= "x"' }, { kind: "grammar", gbnf: 'root ::= "x"' }],
      [
        { json_schema: schema },
        { kind: "json_schema", schema, name: "json_schema", strict: true, field: "json_schema" },
      ],
    ];
    for (const [extra, format] of cases) {
      assert.equal((await chat(app, { ...GOOD, ...extra })).statusCode, 200, JSON.stringify(extra));
      assert.deepEqual(engine.lastCall.format, format, JSON.stringify(extra));
    }
  });

  test("tools, tool_choice and parallel_tool_calls reach the engine; tool_choice none shows no tools", async (t) => {
    const { app, engine } = setup(t);
    const tools = [
      { type: "function", function: { name: "f", description: "F", parameters: { type: "object", properties: {} } } },
      { type: "function", function: { name: "g" } },
    ];
    const expected = [
      { name: "f", description: "F", parameters: { type: "object", properties: {} }, strict: false },
      { name: "g", description: "", parameters: { type: "object", properties: {} }, strict: false },
    ];
    assert.equal((await chat(app, { ...GOOD, tools })).statusCode, 200);
    assert.deepEqual(engine.lastCall.tools, { tools: expected, choice: "auto", parallel: true });
    await chat(app, { ...GOOD, tools, tool_choice: "required", parallel_tool_calls: false });
    assert.deepEqual(engine.lastCall.tools, { tools: expected, choice: "required", parallel: false });
    await chat(app, { ...GOOD, tools, tool_choice: { type: "function", function: { name: "g" } } });
    assert.deepEqual(engine.lastCall.tools?.choice, { name: "g" });
    await chat(app, { ...GOOD, tools, tool_choice: "none" });
    assert.equal(engine.lastCall.tools, null);
  });

  test("a conversation with tool calls and their results is read in OpenAI's field names", async (t) => {
    const { app, engine } = setup(t);
    const call = { id: "call_1", type: "function", function: { name: "f", arguments: '{"x":1}' } };
    const res = await chat(app, {
      ...GOOD,
      messages: [
        { role: "user", content: "Use f." },
        { role: "assistant", content: null, tool_calls: [call] },
        { role: "tool", tool_call_id: "call_1", content: "2" },
      ],
    });
    assert.equal(res.statusCode, 200);
    assert.deepEqual(engine.encoder.calls.at(-1)?.slice(1), [
      { role: "user", content: "Use f." },
      { role: "assistant", content: "", tool_calls: [call] },
      { role: "tool", content: "2", tool_call_id: "call_1" },
    ]);
  });

  test("logit_bias reaches the engine as token ids; zero biases and an empty object are none", async (t) => {
    const { app, engine } = setup(t);
    assert.equal((await chat(app, { ...GOOD, logit_bias: { "12": -100, "7": 2.5, "9": 0 } })).statusCode, 200);
    assert.deepEqual(
      [...(engine.lastCall.logitBias ?? [])],
      // Integer keys of a JSON object come in numeric order.
      [
        [7, 2.5],
        [12, -100],
      ],
    );
    await chat(app, { ...GOOD, logit_bias: {} });
    assert.equal(engine.lastCall.logitBias, null);
  });

  test("the same options pass through on a stream", async (t) => {
    const { app, engine } = setup(t);
    const res = await chat(app, {
      ...GOOD,
      stream: true,
      temperature: 0,
      top_p: 0.1,
      seed: 7,
      stop: "STOP",
      max_tokens: 9,
    });
    assert.equal(res.statusCode, 200);
    const o = engine.lastCall;
    assert.deepEqual([o.temperature, o.topP, o.seed, o.stop, o.maxTokens], [0, 0.1, 7, ["STOP"], 9]);
  });

  test("stop as a single string becomes a one-entry list", async (t) => {
    const { app, engine } = setup(t);
    await chat(app, { ...GOOD, stop: "\n\n" });
    assert.deepEqual(engine.lastCall.stop, ["\n\n"]);
  });

  test("defaults when omitted: temperature from the model config, llama.cpp's top_p/top_k, no seed, no stop, no penalties", async (t) => {
    const { app, engine } = setup(t, { model: { temperature: 0.45 } });
    const res = await chat(app, GOOD);
    assert.equal(res.statusCode, 200);
    const o = engine.lastCall;
    assert.equal(o.temperature, 0.45);
    assert.equal(o.topP, SAMPLING_DEFAULTS.topP);
    assert.equal(o.topK, SAMPLING_DEFAULTS.topK);
    assert.equal(o.seed, null);
    assert.deepEqual(o.stop, []);
    assert.equal(o.presencePenalty, 0);
    assert.equal(o.frequencyPenalty, 0);
    // No max_tokens: whatever fits, capped by the model's output limit.
    assert.equal(o.maxTokens, Math.min(TEST_MODEL.max_output_tokens, engine.contextSize - GOOD_PROMPT));
  });

  test("null values mean the defaults", async (t) => {
    const { app, engine } = setup(t);
    await chat(app, {
      ...GOOD,
      temperature: null,
      top_p: null,
      seed: null,
      stop: null,
      presence_penalty: null,
      max_tokens: null,
    });
    const o = engine.lastCall;
    assert.deepEqual(
      [o.temperature, o.topP, o.seed, o.stop, o.presencePenalty],
      [TEST_MODEL.temperature, SAMPLING_DEFAULTS.topP, null, [], 0],
    );
  });

  test("default output budget is capped by what is left of the context", async (t) => {
    const engine = new FakeEngine({ contextSize: 600 });
    const { app } = setup(t, { engine });
    const res = await chat(app, GOOD);
    assert.equal(res.statusCode, 200);
    assert.equal(engine.lastCall.maxTokens, 600 - GOOD_PROMPT);
  });

  test("a model's default_max_tokens: taken without max_tokens; the request's and the shape's win", async (t) => {
    const { app, engine } = setup(t, { model: { default_max_tokens: 7 } });
    assert.equal((await chat(app, GOOD)).statusCode, 200);
    assert.equal(engine.lastCall.maxTokens, 7);
    assert.equal((await chat(app, { ...GOOD, max_tokens: 9 })).statusCode, 200);
    assert.equal(engine.lastCall.maxTokens, 9);
    assert.equal((await chat(app, { ...GOOD, shape: "terse" })).statusCode, 200);
    assert.equal(engine.lastCall.maxTokens, 64, "the shape's max_tokens");
  });

  test("max_completion_tokens wins over max_tokens", async (t) => {
    const { app, engine } = setup(t);
    await chat(app, { ...GOOD, max_tokens: 100, max_completion_tokens: 20 });
    assert.equal(engine.lastCall.maxTokens, 20);
  });

  test("a shape's sampling defaults apply when the request omits them; the request's values win", async (t) => {
    const { app, engine } = setup(t);
    await chat(app, { ...GOOD, shape: "terse" });
    let o = engine.lastCall;
    assert.deepEqual([o.temperature, o.topP, o.maxTokens], [0.1, 0.5, 64]);
    await chat(app, { ...GOOD, shape: "terse", temperature: 0.9, top_p: 0.7, max_tokens: 10 });
    o = engine.lastCall;
    assert.deepEqual([o.temperature, o.topP, o.maxTokens], [0.9, 0.7, 10]);
    await chat(app, { ...GOOD, shape: "plain" });
    assert.equal(engine.lastCall.temperature, 1.1);
  });

  test("the model's default_shape applies without a request shape", async (t) => {
    const { app, engine } = setup(t, { model: { default_shape: "terse" } });
    await chat(app, GOOD);
    assert.equal(engine.lastCall.temperature, 0.1);
    assert.equal(engine.lastCall.maxTokens, 64);
  });

  test("the prompt passed is the built prompt: default system prompt, then the messages", async (t) => {
    const { app, engine } = setup(t);
    const res = await chat(app, GOOD);
    const body = JSON.parse(res.body) as { usage: { prompt_tokens: number } };
    assert.equal(tokensOf(engine.lastCall).length, body.usage.prompt_tokens);
    assert.equal(body.usage.prompt_tokens, GOOD_PROMPT);
    assert.deepEqual(engine.encoder.calls.at(-1), [
      { role: "system", content: TEST_MODEL.system_prompt },
      ...USER_HELLO,
    ]);
    assert.deepEqual(
      tokensOf(engine.lastCall),
      engine.encoder.encode([
        { role: "system", content: TEST_MODEL.system_prompt! },
        { role: "user", content: "Hello world" },
      ]),
    );
  });

  test("refused requests never reach the engine", async (t) => {
    const { app, engine } = setup(t);
    await chat(app, { ...GOOD, temperature: 3 });
    await chat(app, { ...GOOD, n: 3 });
    await chat(app, { ...GOOD, model: "nope" });
    await chat(app, { ...GOOD, shape: "nope" });
    assert.equal(engine.calls.length, 0);
  });
});

describe("inference failure → 500 server_error without internals", () => {
  const SECRET = "SECRET-internal-detail at /opt/lucena/src/engine.cc:42";

  for (const failAfter of [0, 2]) {
    test(`JSON: the engine throws after ${failAfter} pieces → 500, message without the error's text`, async (t) => {
      const { app, engine } = setup(t);
      engine.failWith = new Error(SECRET);
      engine.failAfter = failAfter;
      const res = await chat(app, { model: MODEL, messages: [{ role: "user", content: "my private words" }] });
      const e = assertError(res, 500, "server_error");
      assert.ok(!e.message.includes("SECRET") && !res.body.includes("SECRET"), res.body);
      assert.ok(!res.body.includes("engine.cc") && !res.body.includes("private words"), res.body);
      assert.ok(!/\bat .*:\d+/.test(res.body), "no stack trace");
      engine.failWith = null;
      const ok = await chat(app, GOOD);
      assert.equal(ok.statusCode, 200, "the server still serves");
    });
  }

  // Errors from libraries often carry an HTTP-looking `statusCode` (http-errors, some native bindings): an
  // engine failure is still a 500 server_error, not the library's status as an invalid_request_error.
  test("an engine error carrying a statusCode (400, 404, 418) is still a 500 server_error", async (t) => {
    const { app, engine } = setup(t);
    for (const statusCode of [400, 404, 418]) {
      engine.failWith = Object.assign(new TypeError("boom SECRET"), { statusCode });
      const res = await chat(app, GOOD);
      assertError(res, 500, "server_error");
      assert.ok(!res.body.includes("SECRET"));
    }
  });

  for (const failAfter of [0, 2]) {
    test(`stream: the engine throws after ${failAfter} pieces → data: {"error":…} then data: [DONE]`, async (t) => {
      const { app, engine } = setup(t);
      engine.failWith = new Error(SECRET);
      engine.failAfter = failAfter;
      const res = await chat(app, { ...GOOD, stream: true });
      assert.equal(res.statusCode, 200);
      requestId(res);
      const events = sseEvents(res.payload);
      assert.equal(events[0], ": connected");
      assert.equal(events.at(-1), "data: [DONE]");
      const last = JSON.parse(events.at(-2)!.slice("data: ".length)) as { error: Record<string, unknown> };
      assert.deepEqual(Object.keys(last), ["error"]);
      assert.deepEqual(Object.keys(last.error), ["message", "type", "code"]);
      assert.equal(last.error.type, "server_error");
      assert.equal(last.error.code, 500);
      assert.ok(!res.payload.includes("SECRET"), res.payload);
      const chunks = sseData(res.payload).filter((c) => c.error === undefined);
      assert.deepEqual(
        chunks.map((c) => c.choices[0]?.delta.content ?? c.choices[0]?.delta.role),
        ["assistant", ...engine.script.slice(0, failAfter)],
      );
      assert.ok(
        chunks.every((c) => c.choices[0]?.finish_reason === null && c.usage === undefined),
        "no usage or finish chunk after an error",
      );
      assert.equal(events.length, 1 + 1 + failAfter + 2);
    });
  }

  test("stream: an LucenaError from the engine mid-stream is sent as it is", async (t) => {
    const { app, engine } = setup(t);
    engine.failWith = errors.modelUnavailable(MODEL, 30);
    engine.failAfter = 1;
    const res = await chat(app, { ...GOOD, stream: true });
    const events = sseEvents(res.payload);
    assert.equal(events.at(-1), "data: [DONE]");
    assert.deepEqual(JSON.parse(events.at(-2)!.slice(6)), {
      error: { message: `The model '${MODEL}' is temporarily unavailable.`, type: "server_error", code: 503 },
    });
  });

  test("JSON: an LucenaError from the engine keeps its status and Retry-After", async (t) => {
    const { app, engine } = setup(t);
    engine.failWith = errors.modelUnavailable(MODEL, 30);
    const res = await chat(app, GOOD);
    assertError(res, 503, "server_error");
    assert.equal(res.headers["retry-after"], "30");
  });
});
