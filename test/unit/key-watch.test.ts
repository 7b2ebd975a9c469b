import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { KeyWatch } from "../../src/keys/key-watch.js";
import type { KeyVerifier, Principal } from "../../src/core/principal.js";
import { assertError, chat, setup, sseEvents } from "../helpers/fake-engine.js";

describe("KeyWatch", () => {
  test("ends the generations of a key no longer usable, once each, and checks each key once per round", () => {
    const usable = new Map([
      ["a", true],
      ["b", true],
    ]);
    const checks: string[] = [];
    const w = new KeyWatch((k) => {
      checks.push(k);
      return usable.get(k)!;
    });
    const ended: string[] = [];
    w.watch("a", () => ended.push("a1"));
    w.watch("a", () => ended.push("a2"));
    const stopB = w.watch("b", () => ended.push("b"));
    w.check();
    assert.deepEqual(ended, []);
    assert.deepEqual(checks, ["a", "b"]);
    usable.set("a", false);
    w.check();
    w.check();
    assert.deepEqual(ended, ["a1", "a2"]);
    stopB();
    usable.set("b", false);
    w.check();
    assert.deepEqual(ended, ["a1", "a2"], "a generation no longer watched is left alone");
    w.close();
  });
});

describe("a key revoked while its request runs", () => {
  const KEY = "sk-lucena-revokable0000000000000000000000";
  const principal: Principal = { keyId: "key_r", limits: { rpm: null, tpm: null, concurrency: null }, models: null };
  function revocable() {
    const state = { usable: true };
    const keys: KeyVerifier = {
      verify: (k) => (k === KEY && state.usable ? principal : null),
      stillUsable: (id) => (id === principal.keyId ? state.usable : undefined),
    };
    return { keys, state, headers: { authorization: `Bearer ${KEY}` } };
  }

  test("a stream ends with the key's error event and [DONE] within the watch's round", async (t) => {
    const { keys, state, headers } = revocable();
    const { app, engine } = setup(t, { keys });
    engine.script = Array.from({ length: 5000 }, (_, i) => `w${i} `);
    engine.delayMs = 2;
    const res = chat(
      app,
      { model: "lucena-coder-latest", stream: true, messages: [{ role: "user", content: "go" }] },
      headers,
    );
    while (engine.active === 0) await new Promise((r) => setImmediate(r));
    state.usable = false;
    const events = sseEvents((await res).payload);
    assert.equal(events.at(-1), "data: [DONE]");
    assert.equal(JSON.parse(events.at(-2)!.slice(6)).error.type, "gateway_auth_error");
    assert.ok(events.length < 5000, `ended after ${events.length} events`);
    assert.equal(engine.active, 0);
  });

  test("a JSON request gets a 401", async (t) => {
    const { keys, state, headers } = revocable();
    const { app, engine } = setup(t, { keys });
    engine.script = Array.from({ length: 5000 }, (_, i) => `w${i} `);
    engine.delayMs = 2;
    const res = chat(app, { model: "lucena-coder-latest", messages: [{ role: "user", content: "go" }] }, headers);
    while (engine.active === 0) await new Promise((r) => setImmediate(r));
    state.usable = false;
    assertError(await res, 401, "gateway_auth_error");
  });
});
