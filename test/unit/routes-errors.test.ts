import assert from "node:assert/strict";
import { describe, test, type TestContext } from "node:test";
import type { FastifyInstance, InjectOptions } from "fastify";
import {
  AUTH,
  assertError,
  BODY_LIMIT,
  chat,
  count,
  FakeEngine,
  requestId,
  setup,
  USER_HELLO,
} from "../helpers/fake-engine.js";

const MODEL = "lucena-coder-latest";
const GOOD = { model: MODEL, messages: USER_HELLO };

/** After a refused request nothing has changed: the engine was not asked, and a good request succeeds. */
async function assertStillServes(app: FastifyInstance, engine: FakeEngine, callsBefore: number): Promise<void> {
  assert.equal(engine.calls.length, callsBefore, "the refused request reached the engine");
  const res = await chat(app, GOOD);
  assert.equal(res.statusCode, 200, res.body);
  assert.equal(
    (JSON.parse(res.body) as { choices: { message: { content: string } }[] }).choices[0].message.content,
    "Hello world!",
  );
  assert.equal(engine.calls.length, callsBefore + 1);
}

const raw = (payload: string | Buffer, headers: Record<string, string> = {}): InjectOptions => ({
  method: "POST",
  url: "/v1/chat/completions",
  headers: { ...AUTH, "content-type": "application/json", ...headers },
  payload,
});

interface BadCase {
  name: string;
  request: InjectOptions;
  /** The expected `param`; undefined: not checked. */
  param?: string | null;
  message?: RegExp;
}

const body = (b: unknown): InjectOptions => raw(JSON.stringify(b));
const withGood = (extra: Record<string, unknown>) => body({ ...GOOD, ...extra });

const BAD: BadCase[] = [
  { name: "malformed JSON", request: raw('{"model": "x", "messages": [}'), param: null, message: /not valid JSON/ },
  { name: "truncated JSON", request: raw('{"model": "lucena-coder-latest"'), param: null },
  { name: "empty body with a JSON content type", request: raw(""), param: null },
  { name: "body is a JSON array", request: body([GOOD]), param: null },
  { name: "body is a JSON string", request: body("hello"), param: null },
  { name: "body is JSON null", request: raw("null"), param: null },
  { name: "body is a number", request: raw("42"), param: null },
  { name: "missing model", request: body({ messages: USER_HELLO }), param: "model", message: /model/ },
  { name: "model is a number", request: body({ model: 42, messages: USER_HELLO }), param: "model" },
  { name: "model is empty", request: body({ model: "", messages: USER_HELLO }), param: "model" },
  { name: "missing messages", request: body({ model: MODEL }), param: "messages", message: /messages/ },
  { name: "messages: []", request: withGood({ messages: [] }), param: "messages" },
  {
    name: "messages is an object",
    request: withGood({ messages: { role: "user", content: "hi" } }),
    param: "messages",
  },
  { name: "message is a string", request: withGood({ messages: ["hi"] }), param: "messages[0]" },
  { name: "message is null", request: withGood({ messages: [null] }), param: "messages[0]" },
  {
    name: "message is an array",
    request: withGood({ messages: [[{ role: "user", content: "hi" }]] }),
    param: "messages[0]",
  },
  {
    name: "second message not an object",
    request: withGood({ messages: [{ role: "user", content: "hi" }, 7] }),
    param: "messages[1]",
  },
  {
    name: "role 'wizard'",
    request: withGood({ messages: [{ role: "wizard", content: "hi" }] }),
    param: "messages[0].role",
    message: /wizard/,
  },
  {
    name: "role 'function'",
    request: withGood({ messages: [{ role: "function", name: "f", content: "hi" }] }),
    param: "messages[0].role",
  },
  { name: "missing role", request: withGood({ messages: [{ content: "hi" }] }), param: "messages[0].role" },
  {
    name: "a user message with tool_calls",
    request: withGood({
      messages: [
        {
          role: "user",
          content: "hi",
          tool_calls: [{ id: "1", type: "function", function: { name: "f", arguments: "{}" } }],
        },
      ],
    }),
    param: "messages[0].tool_calls",
  },
  {
    name: "content is a number",
    request: withGood({ messages: [{ role: "user", content: 5 }] }),
    param: "messages[0].content",
  },
  { name: "content is missing", request: withGood({ messages: [{ role: "user" }] }), param: "messages[0].content" },
  {
    name: "content is an object",
    request: withGood({ messages: [{ role: "user", content: { text: "hi" } }] }),
    param: "messages[0].content",
  },
  {
    name: "content is an empty array",
    request: withGood({ messages: [{ role: "user", content: [] }] }),
    param: "messages[0].content",
  },
  {
    name: "content part of type image_url",
    request: withGood({
      messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "https://example.com/a.png" } }] }],
    }),
    param: "messages[0].content[0].type",
    message: /image_url/,
  },
  {
    name: "second content part of type input_audio",
    request: withGood({
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: "hi" },
            { type: "input_audio", input_audio: { data: "", format: "wav" } },
          ],
        },
      ],
    }),
    param: "messages[0].content[1].type",
  },
  {
    name: "text part without text",
    request: withGood({ messages: [{ role: "user", content: [{ type: "text" }] }] }),
    param: "messages[0].content[0].text",
  },
  {
    name: "content part not an object",
    request: withGood({ messages: [{ role: "user", content: ["hi"] }] }),
    param: "messages[0].content[0]",
  },
  { name: "temperature 5", request: withGood({ temperature: 5 }), param: "temperature" },
  { name: "temperature -1", request: withGood({ temperature: -1 }), param: "temperature" },
  { name: "temperature '0.5'", request: withGood({ temperature: "0.5" }), param: "temperature" },
  { name: "top_p 2", request: withGood({ top_p: 2 }), param: "top_p" },
  { name: "top_p -0.1", request: withGood({ top_p: -0.1 }), param: "top_p" },
  { name: "max_tokens 0", request: withGood({ max_tokens: 0 }), param: "max_tokens" },
  { name: "max_tokens -3", request: withGood({ max_tokens: -3 }), param: "max_tokens" },
  { name: "max_tokens 1.5", request: withGood({ max_tokens: 1.5 }), param: "max_tokens" },
  { name: "max_tokens '10'", request: withGood({ max_tokens: "10" }), param: "max_tokens" },
  {
    name: "max_tokens above the model's max_output_tokens",
    request: withGood({ max_tokens: 1001 }),
    param: "max_tokens",
    message: /1001.*1000|1000.*1001/,
  },
  { name: "max_completion_tokens 0", request: withGood({ max_completion_tokens: 0 }), param: "max_completion_tokens" },
  { name: "stop with 5 entries", request: withGood({ stop: ["a", "b", "c", "d", "e"] }), param: "stop" },
  { name: "stop is a number", request: withGood({ stop: 5 }), param: "stop" },
  { name: "stop is an empty string", request: withGood({ stop: "" }), param: "stop" },
  { name: "seed 1.5", request: withGood({ seed: 1.5 }), param: "seed" },
  { name: "presence_penalty 3", request: withGood({ presence_penalty: 3 }), param: "presence_penalty" },
  { name: "frequency_penalty -2.5", request: withGood({ frequency_penalty: -2.5 }), param: "frequency_penalty" },
  { name: "n: 2", request: withGood({ n: 2 }), param: "n" },
  { name: "n: 0", request: withGood({ n: 0 }), param: "n" },
  { name: "tool_choice required without tools", request: withGood({ tool_choice: "required" }), param: "tool_choice" },
  {
    name: "a tool with a bad name",
    request: withGood({ tools: [{ type: "function", function: { name: "bad name" } }] }),
    param: "tools[0].function.name",
  },
  {
    name: "two tools of one name",
    request: withGood({
      tools: [
        { type: "function", function: { name: "f" } },
        { type: "function", function: { name: "f" } },
      ],
    }),
    param: "tools[1].function.name",
  },
  {
    name: "tool_choice names a tool not given",
    request: withGood({
      tools: [{ type: "function", function: { name: "f" } }],
      tool_choice: { type: "function", function: { name: "g" } },
    }),
    param: "tool_choice",
  },
  {
    name: "a tool message without tool_call_id",
    request: withGood({ messages: [{ role: "tool", content: "42" }] }),
    param: "messages[0].tool_call_id",
  },
  {
    name: "a tool call whose arguments are not a string",
    request: withGood({
      messages: [
        {
          role: "assistant",
          content: null,
          tool_calls: [{ id: "c1", type: "function", function: { name: "f", arguments: {} } }],
        },
        { role: "user", content: "hi" },
      ],
    }),
    param: "messages[0].tool_calls[0].function.arguments",
  },
  {
    name: "response_format of an unknown type",
    request: withGood({ response_format: { type: "xml" } }),
    param: "response_format.type",
  },
  {
    name: "response_format json_schema without a name",
    request: withGood({ response_format: { type: "json_schema", json_schema: { schema: {} } } }),
    param: "response_format.json_schema.name",
  },
  { name: "grammar that is not a string", request: withGood({ grammar: 5 }), param: "grammar" },
  { name: "json_schema that is not an object", request: withGood({ json_schema: "x" }), param: "json_schema" },
  {
    name: "response_format and grammar together",
    request: withGood({ response_format: { type: "json_object" }, grammar: 'root ::= "a"' }),
    param: "grammar",
  },
  { name: "logprobs: 'yes'", request: withGood({ logprobs: "yes" }), param: "logprobs" },
  { name: "top_logprobs 30", request: withGood({ logprobs: true, top_logprobs: 30 }), param: "top_logprobs" },
  { name: "top_logprobs without logprobs", request: withGood({ top_logprobs: 2 }), param: "top_logprobs" },
  {
    name: "logit_bias with a key that is not a token id",
    request: withGood({ logit_bias: { abc: 1 } }),
    param: "logit_bias",
  },
  { name: "logit_bias of 200", request: withGood({ logit_bias: { "5": 200 } }), param: "logit_bias" },
  // llama.cpp's and vLLM's extensions that would change the answer and are not implemented: refused by name.
  { name: "repeat_penalty 0", request: withGood({ repeat_penalty: 0 }), param: "repeat_penalty" },
  { name: "repeat_last_n -2", request: withGood({ repeat_last_n: -2 }), param: "repeat_last_n" },
  { name: "repetition_penalty -1", request: withGood({ repetition_penalty: -1 }), param: "repetition_penalty" },
  {
    name: "repeat_penalty and repetition_penalty together",
    request: withGood({ repeat_penalty: 1.1, repetition_penalty: 1.2 }),
    param: "repetition_penalty",
  },
  { name: "typical_p 0.9", request: withGood({ typical_p: 0.9 }), param: "typical_p" },
  { name: "mirostat 2", request: withGood({ mirostat: 2 }), param: "mirostat" },
  { name: "guided_json", request: withGood({ guided_json: { type: "object" } }), param: "guided_json" },
  { name: "guided_choice", request: withGood({ guided_choice: ["a", "b"] }), param: "guided_choice" },
  { name: "min_p 1.5", request: withGood({ min_p: 1.5 }), param: "min_p" },
  { name: "ignore_eos 'yes'", request: withGood({ ignore_eos: "yes" }), param: "ignore_eos" },
  { name: "stream: 'yes'", request: withGood({ stream: "yes" }), param: "stream" },
  { name: "stream: 1", request: withGood({ stream: 1 }), param: "stream" },
  {
    name: "stream_options.include_usage 'no'",
    request: withGood({ stream: true, stream_options: { include_usage: "no" } }),
    param: "stream_options.include_usage",
  },
  { name: "unknown shape", request: withGood({ shape: "nope" }), param: "shape", message: /nope/ },
  {
    name: "invalid UTF-8 bytes inside a JSON string",
    request: raw(
      Buffer.concat([
        Buffer.from('{"model":"lucena-coder-latest","messages":[{"role":"user","content":"a'),
        Buffer.from([0xff, 0xfe]),
        Buffer.from('b"}]}'),
      ]),
    ),
    param: null,
    message: /UTF-8/,
  },
  {
    name: "__proto__ key in the body",
    request: raw('{"model":"lucena-coder-latest","messages":[{"role":"user","content":"hi"}],"__proto__":{"x":1}}'),
    param: null,
  },
];

function newApp(t: TestContext) {
  return setup(t, { model: { max_output_tokens: 1000 } });
}

describe("bad input on POST /v1/chat/completions → 400 invalid_request_error, nothing changed", () => {
  for (const c of BAD) {
    test(c.name, async (t) => {
      const { app, engine } = newApp(t);
      const res = await app.inject(c.request);
      assertError(res, 400, "invalid_request_error", { param: c.param, message: c.message });
      await assertStillServes(app, engine, 0);
    });
  }

  test("an error message never echoes a long user input in full", async (t) => {
    const { app } = newApp(t);
    const role = "x".repeat(5000);
    const res = await chat(app, { model: MODEL, messages: [{ role, content: "hi" }] });
    const e = assertError(res, 400, "invalid_request_error", { param: "messages[0].role" });
    assert.ok(e.message.length < 500, `message of ${e.message.length} characters`);
  });
});

describe("bad input on POST /v1/tokens/count", () => {
  // The count checks the body's schema, not the fields only a completion acts on.
  const completionOnly = [
    "n: 2",
    "n: 0",
    "tools: [...]",
    "tool_choice required",
    "response_format json_object",
    "logprobs: 'yes'",
    "top_logprobs 30",
    "top_logprobs without logprobs",
    "logit_bias set",
    "repeat_penalty and repetition_penalty together",
    "typical_p 0.9",
    "mirostat 2",
    "grammar",
    "json_schema",
    "guided_json",
    "guided_choice",
  ];
  for (const c of BAD.filter((c) => !completionOnly.includes(c.name))) {
    test(c.name, async (t) => {
      const { app, engine } = newApp(t);
      const res = await app.inject({ ...c.request, url: "/v1/tokens/count" });
      assertError(res, 400, "invalid_request_error", { param: c.param, message: c.message });
      const ok = await count(app, GOOD);
      assert.equal(ok.statusCode, 200, ok.body);
      assert.equal(engine.calls.length, 0);
    });
  }
});

describe("transport errors", () => {
  test("a body larger than bodyLimit → 413 invalid_request_error", async (t) => {
    const { app, engine } = newApp(t);
    const big = { model: MODEL, messages: [{ role: "user", content: "word ".repeat(BODY_LIMIT / 5 + 10) }] };
    for (const url of ["/v1/chat/completions", "/v1/tokens/count"]) {
      const res = await app.inject({ ...body(big), url });
      assertError(res, 413, "invalid_request_error", { param: null });
    }
    await assertStillServes(app, engine, 0);
  });

  test("a body just under bodyLimit is accepted", async (t) => {
    const { app } = newApp(t);
    const filler = "a".repeat(BODY_LIMIT - 200);
    const res = await chat(app, { model: MODEL, messages: [{ role: "user", content: filler }] });
    assert.equal(res.statusCode, 200, res.body);
  });

  // docs/api.md: 400 naming the type (415 is not in the reference's table), on every route that takes a body.
  for (const type of [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/jsonx",
    "json",
    "application/json/x",
  ]) {
    test(`Content-Type ${type} → 400 invalid_request_error naming it`, async (t) => {
      const { app, engine } = newApp(t);
      for (const url of ["/v1/chat/completions", "/v1/tokens/count"]) {
        const res = await app.inject({ ...raw(JSON.stringify(GOOD), { "content-type": type }), url });
        assertError(res, 400, "invalid_request_error", {
          param: null,
          message: `Unsupported Content-Type '${type}': send application/json.`,
        });
      }
      await assertStillServes(app, engine, 0);
    });
  }

  test("a Content-Type of 10,000 characters is named cut to 64", async (t) => {
    const { app } = newApp(t);
    const type = `text/${"x".repeat(10_000)}`;
    const res = await app.inject(raw(JSON.stringify(GOOD), { "content-type": type }));
    const e = assertError(res, 400, "invalid_request_error", { param: null });
    assert.equal(e.message, `Unsupported Content-Type '${type.slice(0, 64)}…': send application/json.`);
  });

  test("a POST with a body and no Content-Type → 400 invalid_request_error saying so", async (t) => {
    const { app, engine } = newApp(t);
    for (const url of ["/v1/chat/completions", "/v1/tokens/count"]) {
      const res = await app.inject({
        method: "POST",
        url,
        headers: { ...AUTH },
        payload: Buffer.from(JSON.stringify(GOOD)),
      });
      assertError(res, 400, "invalid_request_error", { param: null, message: /no Content-Type/ });
    }
    await assertStillServes(app, engine, 0);
  });

  test("Content-Type application/json in any case, with a charset, is accepted", async (t) => {
    const { app } = newApp(t);
    for (const type of ["application/json; charset=utf-8", "application/json;charset=UTF-8", "Application/JSON"]) {
      const res = await app.inject(raw(JSON.stringify(GOOD), { "content-type": type }));
      assert.equal(res.statusCode, 200, `${type}: ${res.body}`);
    }
  });

  test("a POST without any body → 400, not 500", async (t) => {
    const { app, engine } = newApp(t);
    const res = await app.inject({ method: "POST", url: "/v1/chat/completions", headers: AUTH });
    assertError(res, 400, "invalid_request_error");
    await assertStillServes(app, engine, 0);
  });
});

describe("unknown model", () => {
  for (const url of ["/v1/chat/completions", "/v1/tokens/count"]) {
    test(`${url}: unknown model → 404 not_found naming the id and the available ids`, async (t) => {
      const { app, engine } = newApp(t);
      const res = await post(app, url, { model: "gpt-4o", messages: USER_HELLO });
      const e = assertError(res, 404, "not_found");
      assert.match(e.message, /gpt-4o/);
      assert.match(e.message, /lucena-coder-latest/);
      await assertStillServes(app, engine, 0);
    });
  }
});

function post(app: FastifyInstance, url: string, b: unknown) {
  return app.inject({ ...body(b), url });
}

describe("accepted input", () => {
  const OK: [string, Record<string, unknown>][] = [
    [
      "unknown harmless fields (user, metadata)",
      { user: "u-1", metadata: { a: "b" }, store: false, service_tier: "auto" },
    ],
    [
      "role developer",
      {
        messages: [
          { role: "developer", content: "Be brief." },
          { role: "user", content: "hi" },
        ],
      },
    ],
    [
      "content as an array of text parts",
      {
        messages: [
          {
            role: "user",
            content: [
              { type: "text", text: "Hello" },
              { type: "text", text: " world" },
            ],
          },
        ],
      },
    ],
    [
      "neutral values of unsupported fields",
      {
        tools: [],
        tool_choice: "none",
        response_format: { type: "text" },
        logprobs: false,
        logit_bias: {},
        n: 1,
        modalities: ["text"],
      },
    ],
    [
      "neutral values of unsupported extensions",
      {
        repeat_penalty: 1,
        typical_p: 1,
        mirostat: 0,
        min_tokens: 0,
        json_schema: {},
        grammar: "",
        best_of: 1,
        use_beam_search: false,
      },
    ],
    ["honoured extensions", { min_p: 0.1, ignore_eos: true, repeat_penalty: 1.1, repeat_last_n: -1 }],
    ["vLLM's repetition penalty", { repetition_penalty: 1.3 }],
    [
      "nulls for optional fields",
      {
        stream: null,
        temperature: null,
        top_p: null,
        max_tokens: null,
        stop: null,
        seed: null,
        n: null,
        shape: null,
        stream_options: null,
      },
    ],
    [
      "boundary values",
      {
        temperature: 2,
        top_p: 1,
        max_tokens: 1000,
        stop: ["a", "b", "c", "d"],
        presence_penalty: -2,
        frequency_penalty: 2,
        seed: 0,
      },
    ],
    ["temperature 0 and top_p 0", { temperature: 0, top_p: 0 }],
    [
      "a conversation ending with an assistant message",
      {
        messages: [
          { role: "user", content: "hi" },
          { role: "assistant", content: "Hel" },
        ],
      },
    ],
    ["a message with a name", { messages: [{ role: "user", name: "ann", content: "hi" }] }],
  ];
  for (const [name, extra] of OK) {
    test(name, async (t) => {
      const { app, engine } = newApp(t);
      const res = await chat(app, { ...GOOD, ...extra });
      assert.equal(res.statusCode, 200, res.body);
      requestId(res);
      assert.equal((JSON.parse(res.body) as { object: string }).object, "chat.completion");
      assert.equal(engine.calls.length, 1);
    });
  }

  test("text parts are joined as they are into one message", async (t) => {
    const { app, engine } = newApp(t);
    const parts = await count(app, {
      model: MODEL,
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: "one two" },
            { type: "text", text: " three" },
          ],
        },
      ],
    });
    const plain = await count(app, { model: MODEL, messages: [{ role: "user", content: "one two three" }] });
    assert.equal(parts.statusCode, 200);
    assert.deepEqual(JSON.parse(parts.body), JSON.parse(plain.body));
    const res = await chat(app, {
      model: MODEL,
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: "one two" },
            { type: "text", text: " three" },
          ],
        },
      ],
    });
    assert.equal(res.statusCode, 200);
    assert.deepEqual(engine.encoder.calls.at(-1)?.at(-1), { role: "user", content: "one two three" });
  });

  test("role developer is a system message (system_prompt_source 'request')", async (t) => {
    const { app, engine } = newApp(t);
    const res = await count(app, {
      model: MODEL,
      messages: [
        { role: "developer", content: "Be brief." },
        { role: "user", content: "hi" },
      ],
    });
    assert.equal(res.statusCode, 200);
    assert.equal(
      (JSON.parse(res.body) as { _lucena: { system_prompt_source: string } })._lucena.system_prompt_source,
      "request",
    );
    assert.deepEqual(engine.encoder.calls.at(-1), [
      { role: "system", content: "Be brief." },
      { role: "user", content: "hi" },
    ]);
  });
});
