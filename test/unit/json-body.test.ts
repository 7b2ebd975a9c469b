import assert from "node:assert/strict";
import { asHttp } from "../helpers/errors.js";
import { test } from "node:test";
import { INLINE_BODY_BYTES, JsonBodyParser, MAX_BODY_DEPTH } from "../../src/server/json-body.js";
import { LucenaError } from "../../src/core/errors.js";
import { assertError, chat, count, setup } from "../helpers/fake-engine.js";

const big = (content: string) => Buffer.from(JSON.stringify({ model: "m", messages: [{ role: "user", content }] }));

test("a large body is parsed off the event loop: other work runs while it is parsed", async (t) => {
  const parser = new JsonBodyParser();
  t.after(() => parser.close());
  const body = big("word ".repeat(800_000)); // 4 MB
  await parser.parse(big("warm up ".repeat(20_000)));
  let turns = 0;
  let done = false;
  const tick = () => {
    if (!done) {
      turns++;
      setImmediate(tick);
    }
  };
  setImmediate(tick);
  const value = (await parser.parse(body)) as { messages: { content: string }[] };
  done = true;
  assert.equal(value.messages[0].content.length, 4_000_000);
  assert.ok(turns > 0, "the event loop ran while the body was parsed");
});

test("large and small bodies are judged alike: broken UTF-8, bad JSON and prototype keys are refused with a 400", async (t) => {
  const parser = new JsonBodyParser();
  t.after(() => parser.close());
  const pad = "x".repeat(INLINE_BODY_BYTES);
  const cases: [string, Buffer, RegExp][] = [
    [
      "broken UTF-8",
      Buffer.concat([Buffer.from(`{"a":"${pad}`), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]),
      /not valid UTF-8/,
    ],
    ["truncated JSON", Buffer.from(`{"a":"${pad}`), /not valid JSON/],
    ["__proto__", Buffer.from(`{"a":"${pad}","__proto__":{"x":1}}`), /not valid JSON/],
    ["constructor.prototype", Buffer.from(`{"a":"${pad}","constructor":{"prototype":{"x":1}}}`), /not valid JSON/],
    [
      "nested 50,000 deep",
      Buffer.from(`{"a":"${pad}","b":${"[".repeat(50_000)}${"]".repeat(50_000)}}`),
      /nested more than 256 levels/,
    ],
  ];
  for (const [name, body, message] of cases) {
    for (const b of [body, Buffer.from(body.toString("latin1").replace(pad, "x"), "latin1")]) {
      await assert.rejects(
        parser.parse(b),
        (err: unknown) => err instanceof LucenaError && asHttp(err).status === 400 && message.test(err.message),
        `${name}, ${b.length} bytes`,
      );
    }
  }
  assert.deepEqual(await parser.parse(Buffer.from(`{"a":"${pad}","b":[1,{"c":null}]}`)), {
    a: pad,
    b: [1, { c: null }],
  });
  const deepest = `${"[".repeat(MAX_BODY_DEPTH - 1)}{"a":"${pad}"}${"]".repeat(MAX_BODY_DEPTH - 1)}`;
  assert.ok(Array.isArray(await parser.parse(Buffer.from(deepest))), `${MAX_BODY_DEPTH} levels are accepted`);
});

test("a body that shares its memory with other buffers is parsed from a copy, leaving them intact", async (t) => {
  const parser = new JsonBodyParser();
  t.after(() => parser.close());
  const json = JSON.stringify({ a: "y".repeat(INLINE_BODY_BYTES * 2) });
  const whole = Buffer.from(`XXXX${json}YYYY`);
  const view = whole.subarray(4, 4 + json.length);
  assert.deepEqual(await parser.parse(view), JSON.parse(json));
  assert.equal(whole.subarray(0, 4).toString(), "XXXX", "the surrounding buffer was not moved away");
});

test("through the app: a large body gets the same 400s as a small one, and a large valid body is served", async (t) => {
  const { app } = setup(t, { bodyLimit: 4 * 1024 * 1024 });
  const pad = " ".repeat(INLINE_BODY_BYTES + 10);
  const res = await app.inject({
    method: "POST",
    url: "/v1/chat/completions",
    payload: `{"model":"lucena-coder-latest",${pad}"messages":[`,
    headers: { authorization: "Bearer sk-lucena-routetests0000000000000000", "content-type": "application/json" },
  });
  assertError(res, 400, "invalid_request_error", { message: /not valid JSON/ });
  const ok = await count(app, {
    model: "lucena-coder-latest",
    messages: [{ role: "user", content: "w".repeat(INLINE_BODY_BYTES * 2) }],
  });
  assert.equal(ok.statusCode, 200, ok.body);
  assert.equal(
    (await chat(app, { model: "lucena-coder-latest", messages: [{ role: "user", content: "hi" }] })).statusCode,
    200,
  );
});
