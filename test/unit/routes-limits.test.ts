import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { KeyVerifier, Principal } from "../../src/core/principal.js";
import { assertError, chat, count, setup, USER_HELLO } from "../helpers/fake-engine.js";

const MODEL = "lucena-coder-latest";
const LIMITED = "sk-lucena-limited000000000000000000000000";

/** One key with the given limits, besides the tests' unlimited key. */
function limitedKey(limits: Partial<Principal["limits"]>): { keys: KeyVerifier; headers: Record<string, string> } {
  const principal: Principal = {
    keyId: "key_limited",
    limits: { rpm: null, tpm: null, concurrency: null, ...limits },
    models: null,
  };
  return {
    keys: { verify: (k) => (k === LIMITED ? principal : null) },
    headers: { authorization: `Bearer ${LIMITED}` },
  };
}

describe("limits before tokenization", () => {
  test("a completion refused by the key's request rate builds no prompt", async (t) => {
    const { keys, headers } = limitedKey({ rpm: 1 });
    const { app, engine } = setup(t, { keys });
    assert.equal((await chat(app, { model: MODEL, messages: USER_HELLO }, headers)).statusCode, 200);
    const encoded = engine.encoder.calls.length;
    const res = await chat(app, { model: MODEL, messages: [{ role: "user", content: "word ".repeat(2000) }] }, headers);
    assertError(res, 429, "rate_limit_error");
    assert.equal(engine.encoder.calls.length, encoded, "the refused request was never tokenized");
  });

  test("a completion refused for concurrency builds no prompt, and its headers name the concurrency limit", async (t) => {
    const { keys, headers } = limitedKey({ concurrency: 1, rpm: 100 });
    const { app, engine } = setup(t, { keys });
    engine.script = Array.from({ length: 50 }, (_, i) => `w${i} `);
    engine.delayMs = 2;
    const first = chat(app, { model: MODEL, stream: true, messages: USER_HELLO }, headers);
    while (engine.active === 0) await new Promise((r) => setImmediate(r));
    const encoded = engine.encoder.calls.length;
    const res = await chat(app, { model: MODEL, messages: USER_HELLO }, headers);
    assertError(res, 429, "rate_limit_error");
    assert.equal(engine.encoder.calls.length, encoded);
    assert.equal(res.headers["x-ratelimit-limit-concurrency"], "1");
    assert.equal(res.headers["x-ratelimit-remaining-concurrency"], "0");
    assert.equal(res.headers["x-ratelimit-limit-requests"], "100");
    assert.ok(Number(res.headers["retry-after"]) >= 1);
    assert.equal((await first).statusCode, 200);
  });

  test("a prompt refused with a 400 still counts against the key's request rate, with no tokens", async (t) => {
    const { keys, headers } = limitedKey({ rpm: 1, tpm: 1_000_000 });
    const { app } = setup(t, { keys });
    const res = await chat(app, { model: MODEL, shape: "no-such-shape", messages: USER_HELLO }, headers);
    assertError(res, 400, "invalid_request_error", { param: "shape" });
    assertError(await chat(app, { model: MODEL, messages: USER_HELLO }, headers), 429, "rate_limit_error");
  });
});

describe("token counts are admitted by the key's limits", () => {
  test("a key with rpm 1 may count 10 times a minute, then gets a 429; its completion is still there", async (t) => {
    const { keys, headers } = limitedKey({ rpm: 1 });
    const { app, engine } = setup(t, { keys });
    for (let i = 0; i < 10; i++) {
      const res = await count(app, { model: MODEL, messages: USER_HELLO }, headers);
      assert.equal(res.statusCode, 200, res.body);
      assert.equal(res.headers["x-ratelimit-limit-counts"], "10");
      assert.equal(res.headers["x-ratelimit-remaining-counts"], String(9 - i));
    }
    const encoded = engine.encoder.calls.length;
    const res = await count(app, { model: MODEL, messages: USER_HELLO }, headers);
    assertError(res, 429, "rate_limit_error");
    assert.match(JSON.parse(res.body).error.message, /10 token counts per minute/);
    assert.equal(engine.encoder.calls.length, encoded, "the refused count was never tokenized");
    assert.equal((await chat(app, { model: MODEL, messages: USER_HELLO }, headers)).statusCode, 200);
  });

  test("a key without limits counts freely", async (t) => {
    const { app } = setup(t);
    for (let i = 0; i < 30; i++)
      assert.equal((await count(app, { model: MODEL, messages: USER_HELLO })).statusCode, 200);
  });
});
