import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { ChatMessage } from "../../src/api/chat-request.js";
import {
  assertError,
  chat,
  count,
  FakeEncoder,
  FakeEngine,
  fakePromptTokens,
  requestId,
  setup,
  sseData,
  TEST_MODEL,
  USER_HELLO,
  tokensOf,
} from "../helpers/fake-engine.js";

const MODEL = "lucena-coder-latest";
const GOOD = { model: MODEL, messages: USER_HELLO };

interface CountBody {
  object: string;
  model: string;
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  limits: { trim_limit: number; context_size: number; context_limit: number; output_limit: number };
  _lucena: { system_prompt_source: string; trimmed_messages: number; shape_id: string | null };
}

describe("POST /v1/tokens/count", () => {
  test("the reference's shape, fields in order, values from the config and the engine", async (t) => {
    const engine = new FakeEngine({ contextSize: 2048 });
    const { app, config } = setup(t, { engine });
    const res = await count(app, GOOD);
    assert.equal(res.statusCode, 200, res.body);
    requestId(res);
    assert.match(String(res.headers["content-type"]), /^application\/json/);
    const body = JSON.parse(res.body) as CountBody;
    assert.deepEqual(Object.keys(body), ["object", "model", "usage", "limits", "_lucena"]);
    assert.deepEqual(Object.keys(body.usage), ["prompt_tokens", "completion_tokens", "total_tokens"]);
    assert.deepEqual(Object.keys(body.limits), ["trim_limit", "context_size", "context_limit", "output_limit"]);
    assert.deepEqual(Object.keys(body._lucena), ["system_prompt_source", "trimmed_messages", "shape_id"]);
    const prompt = fakePromptTokens([{ content: config.system_prompt! }, ...USER_HELLO]);
    assert.deepEqual(body, {
      object: "token_count",
      model: MODEL,
      usage: { prompt_tokens: prompt, completion_tokens: 0, total_tokens: prompt },
      limits: {
        trim_limit: config.max_input_tokens,
        context_size: 2048,
        context_limit: config.context_window,
        output_limit: config.max_output_tokens,
      },
      _lucena: { system_prompt_source: "default", trimmed_messages: 1, shape_id: null },
    });
    assert.equal(engine.calls.length, 0, "counting generates nothing");
  });

  test("limits.context_size is the engine's allocated context, not the config's", async (t) => {
    const { app } = setup(t, { engine: new FakeEngine({ contextSize: 4096 }), model: { context_size: 8192 } });
    const body = JSON.parse((await count(app, GOOD)).body) as CountBody;
    assert.equal(body.limits.context_size, 4096);
  });

  test("stream: true is ignored by the count (JSON)", async (t) => {
    const { app } = setup(t);
    const res = await count(app, { ...GOOD, stream: true });
    assert.equal(res.statusCode, 200);
    assert.equal((JSON.parse(res.body) as CountBody).object, "token_count");
  });

  describe("system_prompt_source and shape_id", () => {
    const cases: [
      string,
      Parameters<typeof setup>[1],
      Record<string, unknown>,
      string,
      string | null,
      { content: string }[],
    ][] = [
      [
        "request (system message)",
        {},
        { messages: [{ role: "system", content: "Be kind." }, ...USER_HELLO] },
        "request",
        null,
        [{ content: "Be kind." }, ...USER_HELLO],
      ],
      [
        "request (developer message)",
        {},
        { messages: [{ role: "developer", content: "Be kind." }, ...USER_HELLO] },
        "request",
        null,
        [{ content: "Be kind." }, ...USER_HELLO],
      ],
      [
        "request beats the shape",
        {},
        { shape: "terse", messages: [{ role: "system", content: "Be kind." }, ...USER_HELLO] },
        "request",
        "terse",
        [{ content: "Be kind." }, ...USER_HELLO],
      ],
      [
        "shape",
        {},
        { shape: "terse" },
        "shape",
        "terse",
        [{ content: TEST_MODEL.shapes.terse.system_prompt! }, ...USER_HELLO],
      ],
      [
        "default_shape from the config",
        { model: { default_shape: "terse" } },
        {},
        "shape",
        "terse",
        [{ content: TEST_MODEL.shapes.terse.system_prompt! }, ...USER_HELLO],
      ],
      [
        "a shape without a prompt falls back to the default",
        {},
        { shape: "plain" },
        "default",
        "plain",
        [{ content: TEST_MODEL.system_prompt! }, ...USER_HELLO],
      ],
      ["default", {}, {}, "default", null, [{ content: TEST_MODEL.system_prompt! }, ...USER_HELLO]],
      ["none (no default prompt)", { model: { system_prompt: null } }, {}, "none", null, USER_HELLO],
      [
        "none with a prompt-less shape",
        { model: { system_prompt: null } },
        { shape: "plain" },
        "none",
        "plain",
        USER_HELLO,
      ],
    ];
    for (const [name, appOpts, extra, source, shapeId, prompt] of cases) {
      test(name, async (t) => {
        const { app } = setup(t, appOpts);
        const res = await count(app, { ...GOOD, ...extra });
        assert.equal(res.statusCode, 200, res.body);
        const body = JSON.parse(res.body) as CountBody;
        assert.equal(body._lucena.system_prompt_source, source);
        assert.equal(body._lucena.shape_id, shapeId);
        assert.equal(body.usage.prompt_tokens, fakePromptTokens(prompt));
        assert.equal(body._lucena.trimmed_messages, (extra.messages as unknown[] | undefined)?.length ?? 1);
      });
    }
  });

  test("unknown shape → 400 invalid_request_error, param 'shape', naming the known shapes", async (t) => {
    const { app } = setup(t);
    const res = await count(app, { ...GOOD, shape: "wizardly" });
    const e = assertError(res, 400, "invalid_request_error", { param: "shape" });
    assert.match(e.message, /wizardly/);
    assert.match(e.message, /terse/);
  });

  test("a configured default_shape that does not exist → 400 param 'shape', not a 500", async (t) => {
    const { app } = setup(t, { model: { default_shape: "gone" } });
    assertError(await count(app, GOOD), 400, "invalid_request_error", { param: "shape" });
  });
});

describe("the count equals the completion's prompt_tokens for the same body", () => {
  const bodies: [string, Record<string, unknown>][] = [
    ["a single user message", GOOD],
    [
      "a system message",
      {
        model: MODEL,
        messages: [
          { role: "system", content: "You are terse." },
          { role: "user", content: "Explain   closures\tin JS" },
        ],
      },
    ],
    [
      "a conversation",
      {
        model: MODEL,
        messages: [
          { role: "user", content: "hi" },
          { role: "assistant", content: "Hello there friend" },
          { role: "user", content: "and now?" },
        ],
      },
    ],
    ["a shape", { ...GOOD, shape: "terse" }],
    [
      "text parts",
      {
        model: MODEL,
        messages: [
          {
            role: "user",
            content: [
              { type: "text", text: "a b" },
              { type: "text", text: " c d e" },
            ],
          },
        ],
      },
    ],
    ["max_tokens and sampling fields", { ...GOOD, max_tokens: 100, temperature: 0.2, seed: 1 }],
    ["an empty user message", { model: MODEL, messages: [{ role: "user", content: "" }] }],
  ];
  for (const [name, b] of bodies) {
    test(name, async (t) => {
      const { app, engine } = setup(t);
      const c = JSON.parse((await count(app, b)).body) as CountBody;
      const json = await chat(app, b);
      assert.equal(json.statusCode, 200, json.body);
      assert.equal(
        (JSON.parse(json.body) as { usage: { prompt_tokens: number } }).usage.prompt_tokens,
        c.usage.prompt_tokens,
      );
      assert.equal(tokensOf(engine.lastCall).length, c.usage.prompt_tokens);
      const sse = await chat(app, { ...b, stream: true });
      const usage = sseData(sse.payload).find((ch) => ch.usage)?.usage;
      assert.equal(usage?.prompt_tokens, c.usage.prompt_tokens);
    });
  }
});

describe("trimming", () => {
  // Budget 30 tokens. System "Be brief." = 5, each older message 8, the last user message 6, primer 2: 45 in all.
  const older = [
    { role: "user", content: "one two three four five" },
    { role: "assistant", content: "a b c d e" },
    { role: "user", content: "f g h i j" },
    { role: "assistant", content: "k l m n o" },
  ];
  const last = { role: "user", content: "last question here" };
  const opts = { model: { system_prompt: "Be brief.", max_input_tokens: 30 } };

  test("drops the oldest whole messages until the prompt fits; the count and the completion agree", async (t) => {
    const { app, engine } = setup(t, opts);
    const b = { model: MODEL, messages: [...older, last] };
    const res = await count(app, b);
    assert.equal(res.statusCode, 200, res.body);
    const c = JSON.parse(res.body) as CountBody;
    assert.equal(c.limits.trim_limit, 30);
    assert.equal(c._lucena.trimmed_messages, 3);
    assert.equal(c.usage.prompt_tokens, fakePromptTokens([{ content: "Be brief." }, older[2], older[3], last]));
    assert.ok(c.usage.prompt_tokens <= 30);

    const done = JSON.parse((await chat(app, b)).body) as { usage: { prompt_tokens: number } };
    assert.equal(done.usage.prompt_tokens, c.usage.prompt_tokens);
    // The prompt generated from is the system prompt, the two newest older messages and the last one.
    const expected = new FakeEncoder().encode([
      { role: "system", content: "Be brief." },
      ...(older.slice(2) as ChatMessage[]),
      last as ChatMessage,
    ]);
    assert.deepEqual(tokensOf(engine.lastCall), expected);
  });

  test("a request's own system message is never dropped", async (t) => {
    const { app, engine } = setup(t, opts);
    const sys = { role: "system", content: "Be brief." };
    const b = { model: MODEL, messages: [sys, ...older, last] };
    const c = JSON.parse((await count(app, b)).body) as CountBody;
    assert.equal(c._lucena.system_prompt_source, "request");
    assert.equal(c._lucena.trimmed_messages, 4);
    assert.equal((await chat(app, b)).statusCode, 200);
    assert.deepEqual(
      tokensOf(engine.lastCall),
      new FakeEncoder().encode([sys, older[2], older[3], last] as ChatMessage[]),
    );
  });

  test("a prompt that does not fit even after trimming → 400 naming both token counts", async (t) => {
    const { app, engine } = setup(t, opts);
    const huge = { role: "user", content: Array.from({ length: 40 }, (_, i) => `w${i}`).join(" ") };
    const needed = fakePromptTokens([{ content: "Be brief." }, huge]);
    for (const send of [count, chat]) {
      const res = await send(app, { model: MODEL, messages: [...older, huge] });
      const e = assertError(res, 400, "invalid_request_error", { param: "messages" });
      assert.match(e.message, new RegExp(`\\b${needed}\\b`));
      assert.match(e.message, /\b30\b/);
    }
    assert.equal(engine.calls.length, 0);
  });

  test("max_tokens that leaves no room for a prompt → 400 param 'max_tokens'", async (t) => {
    const { app } = setup(t, { engine: new FakeEngine({ contextSize: 600 }) });
    assertError(await count(app, { ...GOOD, max_tokens: 600 }), 400, "invalid_request_error", { param: "max_tokens" });
    assertError(await chat(app, { ...GOOD, max_tokens: 600 }), 400, "invalid_request_error", { param: "max_tokens" });
  });
});
