import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { LightMyRequestResponse } from "fastify";
import {
  AUTH,
  chat,
  count,
  fakePromptTokens,
  requestId,
  setup,
  sseData,
  sseEvents,
  TEST_MODEL,
  USER_HELLO,
  type Chunk,
} from "../helpers/fake-engine.js";

const MODEL = "lucena-coder-latest";
const GOOD = { model: MODEL, messages: USER_HELLO };
/** The prompt of GOOD: the model's default system prompt, then the user's message. */
const GOOD_PROMPT = fakePromptTokens([{ content: TEST_MODEL.system_prompt! }, ...USER_HELLO]);

function isSse(res: LightMyRequestResponse): boolean {
  return /^text\/event-stream/.test(String(res.headers["content-type"]));
}

function assertJsonCompletion(res: LightMyRequestResponse, content: string): void {
  assert.equal(res.statusCode, 200, res.body);
  requestId(res);
  assert.match(String(res.headers["content-type"]), /^application\/json/);
  const body = JSON.parse(res.body) as { object: string; choices: { message: { content: string } }[] };
  assert.equal(body.object, "chat.completion");
  assert.equal(body.choices[0].message.content, content);
}

function assertSse(res: LightMyRequestResponse, content: string): void {
  assert.equal(res.statusCode, 200, res.body);
  requestId(res);
  assert.ok(isSse(res), String(res.headers["content-type"]));
  assert.equal(sseEvents(res.payload)[0], ": connected");
  assert.equal(
    sseData(res.payload)
      .map((c) => c.choices[0]?.delta.content ?? "")
      .join(""),
    content,
  );
  assert.equal(sseEvents(res.payload).at(-1), "data: [DONE]");
}

describe('streaming decision (docs/api.md, "Stream or JSON")', () => {
  const cases: [string, Record<string, unknown>, Record<string, string>, boolean][] = [
    ["stream: true → SSE", { stream: true }, {}, true],
    ["stream: false → JSON", { stream: false }, {}, false],
    ["stream omitted → JSON", {}, {}, false],
    ["stream: null → JSON", { stream: null }, {}, false],
    ["stream omitted, Accept */* → JSON", {}, { accept: "*/*" }, false],
    ["stream omitted, Accept application/json → JSON", {}, { accept: "application/json" }, false],
    ["stream omitted, Accept text/event-stream → SSE", {}, { accept: "text/event-stream" }, true],
    [
      "stream omitted, Accept naming text/event-stream among others → SSE",
      {},
      { accept: "application/json, text/event-stream;q=0.9" },
      true,
    ],
    [
      "stream: false, Accept text/event-stream → JSON (the flag wins)",
      { stream: false },
      { accept: "text/event-stream" },
      false,
    ],
    [
      "stream: true, Accept application/json → SSE (the flag wins)",
      { stream: true },
      { accept: "application/json" },
      true,
    ],
  ];
  for (const [name, extra, headers, sse] of cases) {
    test(name, async (t) => {
      const { app } = setup(t);
      const res = await chat(app, { ...GOOD, ...extra }, headers);
      if (sse) assertSse(res, "Hello world!");
      else assertJsonCompletion(res, "Hello world!");
    });
  }

  for (const [name, extra] of [
    ["stream: false", { stream: false }],
    ["stream omitted", {}],
    ["stream: true", { stream: true }],
  ] as const) {
    test(`alwaysStream: ${name} → SSE`, async (t) => {
      const { app } = setup(t, { alwaysStream: true });
      assertSse(await chat(app, { ...GOOD, ...extra }), "Hello world!");
    });
  }

  test("alwaysStream does not stream /v1/tokens/count or errors", async (t) => {
    const { app } = setup(t, { alwaysStream: true });
    const res = await chat(app, { ...GOOD, temperature: 9 });
    assert.equal(res.statusCode, 400);
    assert.match(String(res.headers["content-type"]), /^application\/json/);
    const c = await count(app, { ...GOOD, stream: true });
    assert.equal(c.statusCode, 200);
    assert.match(String(c.headers["content-type"]), /^application\/json/);
    assert.equal((JSON.parse(c.body) as { object: string }).object, "token_count");
  });
});

describe("SSE stream, frame by frame", () => {
  test("connected, role, content…, usage, finish, [DONE]; every chunk alike", async (t) => {
    const { app, config } = setup(t);
    const before = Math.floor(Date.now() / 1000);
    const res = await chat(app, { ...GOOD, stream: true });
    const after = Math.floor(Date.now() / 1000);
    assert.equal(res.statusCode, 200);
    requestId(res);
    assert.equal(res.headers["content-type"], "text/event-stream; charset=utf-8");
    assert.equal(res.headers["cache-control"], "no-cache");

    const events = sseEvents(res.payload);
    assert.equal(events.length, 8, events.join("\n"));
    assert.equal(events[0], ": connected");
    assert.equal(events[7], "data: [DONE]");
    for (const e of events.slice(1, 7)) assert.ok(e.startsWith("data: {"), e);
    const chunks = events.slice(1, 7).map((e) => JSON.parse(e.slice(6)) as Chunk);

    const [role, c1, c2, c3, use, finish] = [chunks[0], chunks[1], chunks[2], chunks[3], chunks[4], chunks[5]];
    assert.deepEqual(role.choices, [{ index: 0, delta: { role: "assistant" }, finish_reason: null }]);
    assert.deepEqual(c1.choices, [{ index: 0, delta: { content: "Hello" }, finish_reason: null }]);
    assert.deepEqual(c2.choices, [{ index: 0, delta: { content: " world" }, finish_reason: null }]);
    assert.deepEqual(c3.choices, [{ index: 0, delta: { content: "!" }, finish_reason: null }]);
    assert.deepEqual(use.choices, []);
    assert.deepEqual(use.usage, { prompt_tokens: GOOD_PROMPT, completion_tokens: 3, total_tokens: GOOD_PROMPT + 3 });
    assert.deepEqual(Object.keys(use), ["id", "object", "created", "model", "choices", "usage"]);
    assert.deepEqual(finish.choices, [{ index: 0, delta: {}, finish_reason: "stop" }]);

    const id = role.id;
    assert.match(id, /^chatcmpl-[0-9A-Za-z]+$/);
    for (const c of chunks) {
      assert.equal(c.id, id);
      assert.equal(c.object, "chat.completion.chunk");
      assert.equal(c.model, config.id);
      assert.ok(Number.isInteger(c.created) && c.created >= before && c.created <= after, String(c.created));
      assert.equal(c.created, role.created);
      assert.deepEqual(Object.keys(c).slice(0, 5), ["id", "object", "created", "model", "choices"]);
    }
  });

  test("the payload is exactly the frames of docs/api.md, each ending with a blank line", async (t) => {
    const { app, engine } = setup(t);
    engine.script = ["pong"];
    const res = await chat(app, { ...GOOD, stream: true });
    const id = sseData(res.payload)[0].id;
    const created = sseData(res.payload)[0].created;
    const head = `{"id":"${id}","object":"chat.completion.chunk","created":${created},"model":"${MODEL}"`;
    assert.equal(
      res.payload,
      ": connected\n\n" +
        `data: ${head},"choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}\n\n` +
        `data: ${head},"choices":[{"index":0,"delta":{"content":"pong"},"finish_reason":null}]}\n\n` +
        `data: ${head},"choices":[],"usage":{"prompt_tokens":${GOOD_PROMPT},"completion_tokens":1,"total_tokens":${GOOD_PROMPT + 1}}}\n\n` +
        `data: ${head},"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n` +
        "data: [DONE]\n\n",
    );
  });

  test("two streams get different completion ids", async (t) => {
    const { app } = setup(t);
    const a = sseData((await chat(app, { ...GOOD, stream: true })).payload)[0].id;
    const b = sseData((await chat(app, { ...GOOD, stream: true })).payload)[0].id;
    assert.notEqual(a, b);
  });

  test("stream_options {include_usage:false} → no usage chunk", async (t) => {
    const { app } = setup(t);
    const res = await chat(app, { ...GOOD, stream: true, stream_options: { include_usage: false } });
    const chunks = sseData(res.payload);
    assert.equal(chunks.length, 5);
    assert.ok(chunks.every((c) => c.usage === undefined && c.choices.length === 1));
    assert.deepEqual(chunks.at(-1)!.choices, [{ index: 0, delta: {}, finish_reason: "stop" }]);
    assert.equal(sseEvents(res.payload).at(-1), "data: [DONE]");
  });

  for (const so of [{ include_usage: true }, {}, null]) {
    test(`stream_options ${JSON.stringify(so)} → the usage chunk is sent`, async (t) => {
      const { app } = setup(t);
      const chunks = sseData((await chat(app, { ...GOOD, stream: true, stream_options: so })).payload);
      const usage = chunks.filter((c) => c.usage !== undefined);
      assert.equal(usage.length, 1);
      assert.deepEqual(usage[0].choices, []);
      assert.equal(chunks.indexOf(usage[0]), chunks.length - 2, "usage comes just before the finish chunk");
    });
  }

  test("text needing escapes (newlines, quotes, U+2028, non-ASCII) stays one valid JSON line per event", async (t) => {
    const { app, engine } = setup(t);
    engine.script = ["line1\nline2", '"quoted"\r\n', "\u2028sep\u2029", "héllo 日本 🎉", "\\", "data: [DONE]\n\n"];
    const res = await chat(app, { ...GOOD, stream: true });
    const chunks = sseData(res.payload);
    const content = chunks.slice(1, 7).map((c) => c.choices[0].delta.content);
    assert.deepEqual(content, engine.script);
    assert.equal(sseEvents(res.payload).filter((e) => e === "data: [DONE]").length, 1);
  });

  test("a silent engine gets `: keepalive` comments between chunks", async (t) => {
    const { app, engine } = setup(t, { keepaliveMs: 20 });
    engine.script = ["a", "b"];
    engine.delayMs = 90;
    const res = await chat(app, { ...GOOD, stream: true });
    const events = sseEvents(res.payload);
    assert.equal(events[0], ": connected");
    assert.ok(events.filter((e) => e === ": keepalive").length >= 2, events.join("\n"));
    const data = events.filter((e) => e.startsWith("data: "));
    assert.equal(data.length, 6); // role, a, b, usage, finish, [DONE]
    assert.ok(events.indexOf(": keepalive") > events.indexOf(data[0]), "keepalive only after the role chunk");
    assert.deepEqual(
      sseData(res.payload)
        .map((c) => c.choices[0]?.delta.content)
        .filter(Boolean),
      ["a", "b"],
    );
  });

  test("no keepalive comment when chunks keep coming", async (t) => {
    const { app } = setup(t, { keepaliveMs: 5_000 });
    const events = sseEvents((await chat(app, { ...GOOD, stream: true })).payload);
    assert.ok(!events.includes(": keepalive"));
  });
});

describe("finish_reason", () => {
  test("JSON: 'stop' when the engine ends itself, with usage", async (t) => {
    const { app } = setup(t);
    const res = await chat(app, GOOD);
    const body = JSON.parse(res.body) as Record<string, unknown>;
    assert.deepEqual(Object.keys(body), ["id", "object", "created", "model", "choices", "usage"]);
    assert.match(body.id as string, /^chatcmpl-[0-9A-Za-z]+$/);
    assert.equal(body.object, "chat.completion");
    assert.equal(body.model, MODEL);
    assert.ok(Number.isInteger(body.created));
    assert.deepEqual(body.choices, [
      { index: 0, message: { role: "assistant", content: "Hello world!" }, finish_reason: "stop" },
    ]);
    assert.deepEqual(body.usage, { prompt_tokens: GOOD_PROMPT, completion_tokens: 3, total_tokens: GOOD_PROMPT + 3 });
  });

  test("JSON: 'length' when max_tokens is reached", async (t) => {
    const { app, engine } = setup(t);
    const res = await chat(app, { ...GOOD, max_tokens: 2 });
    const body = JSON.parse(res.body) as { choices: unknown[]; usage: unknown };
    assert.deepEqual(body.choices, [
      { index: 0, message: { role: "assistant", content: "Hello world" }, finish_reason: "length" },
    ]);
    assert.deepEqual(body.usage, { prompt_tokens: GOOD_PROMPT, completion_tokens: 2, total_tokens: GOOD_PROMPT + 2 });
    assert.equal(engine.lastCall.maxTokens, 2);
  });

  test("JSON: max_completion_tokens limits like max_tokens", async (t) => {
    const { app } = setup(t);
    const res = await chat(app, { ...GOOD, max_completion_tokens: 1 });
    const body = JSON.parse(res.body) as { choices: { message: { content: string }; finish_reason: string }[] };
    assert.equal(body.choices[0].message.content, "Hello");
    assert.equal(body.choices[0].finish_reason, "length");
  });

  test("SSE: 'length' when max_tokens is reached", async (t) => {
    const { app } = setup(t);
    const chunks = sseData((await chat(app, { ...GOOD, stream: true, max_tokens: 1 })).payload);
    assert.deepEqual(chunks.map((c) => c.choices[0]?.delta.content).filter(Boolean), ["Hello"]);
    assert.deepEqual(chunks.at(-2)!.usage, {
      prompt_tokens: GOOD_PROMPT,
      completion_tokens: 1,
      total_tokens: GOOD_PROMPT + 1,
    });
    assert.deepEqual(chunks.at(-1)!.choices, [{ index: 0, delta: {}, finish_reason: "length" }]);
  });

  test("SSE: 'stop' when the engine ends itself before max_tokens", async (t) => {
    const { app } = setup(t);
    const chunks = sseData((await chat(app, { ...GOOD, stream: true, max_tokens: 50 })).payload);
    assert.deepEqual(chunks.at(-1)!.choices, [{ index: 0, delta: {}, finish_reason: "stop" }]);
  });

  test("an engine that generates nothing: empty content, finish 'stop'", async (t) => {
    const { app, engine } = setup(t);
    engine.script = [];
    const body = JSON.parse((await chat(app, GOOD)).body) as {
      choices: { message: { content: string }; finish_reason: string }[];
      usage: { completion_tokens: number };
    };
    assert.equal(body.choices[0].message.content, "");
    assert.equal(body.choices[0].finish_reason, "stop");
    assert.equal(body.usage.completion_tokens, 0);
    const chunks = sseData((await chat(app, { ...GOOD, stream: true })).payload);
    assert.equal(chunks.length, 3); // role, usage, finish
    assert.ok(chunks.every((c) => c.choices[0]?.delta.content === undefined));
  });
});

describe("client disconnect", () => {
  test("closing the response mid-stream aborts the engine's signal and ends generation as cancelled", async (t) => {
    const { app, engine } = setup(t);
    engine.script = Array.from({ length: 50 }, (_, i) => `t${i} `);
    engine.delayMs = 10;
    const res = await app.inject({
      method: "POST",
      url: "/v1/chat/completions",
      headers: { ...AUTH, "content-type": "application/json" },
      payload: JSON.stringify({ ...GOOD, stream: true }),
      payloadAsStream: true,
    });
    assert.equal(res.statusCode, 200);
    const stream = res.stream();
    let seen = "";
    for await (const chunk of stream) {
      seen += String(chunk);
      if (seen.includes('"content":"t2 "')) break;
    }
    (res.raw.res as unknown as { destroy(): void }).destroy();
    const deadline = Date.now() + 2000;
    while (engine.finished.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.equal(engine.lastCall.signal.aborted, true);
    assert.equal(engine.finished.length, 1);
    const done = engine.finished[0];
    assert.ok(done.type === "done" && done.finishReason === "cancelled", JSON.stringify(done));
    assert.ok(done.type === "done" && done.completionTokens < 50);
  });

  test("after a completed request the engine's signal is aborted (the sequence is released)", async (t) => {
    const { app, engine } = setup(t);
    await chat(app, GOOD);
    assert.equal(engine.lastCall.signal.aborted, true);
    await chat(app, { ...GOOD, stream: true });
    assert.equal(engine.lastCall.signal.aborted, true);
    assert.deepEqual(
      engine.finished.map((e) => e.type === "done" && e.finishReason),
      ["stop", "stop"],
    );
  });
});
