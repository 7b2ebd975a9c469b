import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { pino } from "pino";
import { buildApp } from "../../src/server/app.js";
import { StaticKeys } from "../../src/keys/verifiers.js";
import { ECHO_LIMIT, echo } from "../../src/core/errors.js";
import { health } from "../../src/server/ops.js";
import { ModelRegistry } from "../../src/server/registry.js";
import {
  AUTH,
  assertError,
  chat,
  count,
  FakeEngine,
  post,
  setup,
  TEST_KEY,
  TEST_MODEL,
  USER_HELLO,
} from "../helpers/fake-engine.js";

const MODEL = "lucena-coder-latest";
const GOOD = { model: MODEL, messages: USER_HELLO };
/** Names every plain object inherits: none of them is a configured shape or model. */
const INHERITED = ["__proto__", "constructor", "toString", "hasOwnProperty", "valueOf", "__defineGetter__"];

describe("names looked up among a model's shapes and the models are own names only", () => {
  for (const name of INHERITED) {
    test(`"shape": "${name}" → 400 unknown shape on chat and count, the engine untouched`, async (t) => {
      const { app, engine } = setup(t);
      for (const send of [chat, count]) {
        const res = await send(app, { ...GOOD, shape: name });
        const e = assertError(res, 400, "invalid_request_error", { param: "shape" });
        assert.ok(e.message.includes(`'${name}'`), e.message);
        assert.match(e.message, /terse, plain/);
      }
      assert.equal(engine.calls.length, 0);
    });

    test(`"model": "${name}" → 404 unknown model`, async (t) => {
      const { app } = setup(t);
      assertError(await chat(app, { ...GOOD, model: name }), 404, "not_found");
      assertError(await count(app, { ...GOOD, model: name }), 404, "not_found");
    });
  }

  test("a configured shape may have any name, an inherited one included", async (t) => {
    // A config file's JSON.parse makes "__proto__" an own key, as here.
    const shapes = JSON.parse(
      '{"__proto__": {"system_prompt": "Be odd."}, "constructor": {"system_prompt": "Be built."}}',
    ) as typeof TEST_MODEL.shapes;
    const { app } = setup(t, { model: { shapes } });
    for (const name of ["__proto__", "constructor"]) {
      const res = await count(app, { ...GOOD, shape: name });
      assert.equal(res.statusCode, 200, res.body);
      assert.equal((JSON.parse(res.body) as { _lucena: { shape_id: string } })._lucena.shape_id, name);
    }
    assertError(await count(app, { ...GOOD, shape: "toString" }), 400, "invalid_request_error", { param: "shape" });
  });

  test("a model whose id is an inherited name is listed under that id in /v1/stats and /health", async (t) => {
    const models = ["__proto__", "constructor"].map((id) => ({
      config: { ...TEST_MODEL, id },
      engine: new FakeEngine({ modelId: id }),
      demo: false,
    }));
    const registry = new ModelRegistry(models);
    const app = buildApp({
      registry,
      keys: new StaticKeys([TEST_KEY]),
      log: pino({ level: "silent" }),
      bodyLimit: 1 << 16,
      alwaysStream: false,
      keepaliveMs: 60_000,
    });
    t.after(() => app.close());
    const stats = await app.inject({ method: "GET", url: "/v1/stats", headers: AUTH });
    assert.equal(stats.statusCode, 200);
    const body = JSON.parse(stats.body) as { models: Record<string, { status: string }> };
    assert.deepEqual(Object.keys(body.models), ["__proto__", "constructor"]);
    assert.equal(Object.getPrototypeOf(body.models), Object.prototype);
    assert.deepEqual(JSON.parse(JSON.stringify(health(registry))), {
      status: "ok",
      models: JSON.parse('{"__proto__":"ready","constructor":"ready"}'),
    });
  });
});

describe("client strings in error messages are cut to 64 characters", () => {
  test("echo() keeps short strings, cuts long ones and never splits a surrogate pair", () => {
    assert.equal(ECHO_LIMIT, 64);
    assert.equal(echo("gpt-4o"), "gpt-4o");
    assert.equal(echo("x".repeat(64)), "x".repeat(64));
    assert.equal(echo("x".repeat(65)), `${"x".repeat(64)}…`);
    const split = echo(`${"x".repeat(63)}😀tail`);
    assert.equal(split, `${"x".repeat(63)}…`);
  });

  const huge = "m".repeat(1_000_000);
  const cases: [string, string, Record<string, unknown>, number, string | null][] = [
    ["an unknown model id of 1,000,000 characters (chat)", "/v1/chat/completions", { ...GOOD, model: huge }, 404, null],
    ["an unknown model id of 1,000,000 characters (count)", "/v1/tokens/count", { ...GOOD, model: huge }, 404, null],
    ["an unknown shape of 1,000,000 characters", "/v1/chat/completions", { ...GOOD, shape: huge }, 400, "shape"],
    [
      "a role of 1,000,000 characters",
      "/v1/chat/completions",
      { model: MODEL, messages: [{ role: huge, content: "hi" }] },
      400,
      "messages[0].role",
    ],
    [
      "a content part type of 1,000,000 characters",
      "/v1/tokens/count",
      { model: MODEL, messages: [{ role: "user", content: [{ type: huge }] }] },
      400,
      "messages[0].content[0].type",
    ],
  ];
  for (const [name, url, body, status, param] of cases) {
    test(`${name} → ${status}, echoing 64 characters of it`, async (t) => {
      const { app } = setup(t, { bodyLimit: 2 * 1024 * 1024 });
      const res = await post(app, url, body);
      const e = assertError(
        res,
        status,
        status === 404 ? "not_found" : "invalid_request_error",
        param === null ? {} : { param },
      );
      assert.ok(e.message.includes(`'${"m".repeat(64)}…'`), e.message);
      assert.ok(!e.message.includes("m".repeat(65)), e.message);
      assert.ok(res.body.length < 400, `${res.body.length} bytes answered`);
    });
  }

  test("the admin API's unknown key id is cut too (Fastify matches route parameters of up to 100 characters)", async (t) => {
    const { KeyStore } = await import("../../src/keys/store.js");
    const { mkdtempSync, rmSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const { join } = await import("node:path");
    const dir = mkdtempSync(join(tmpdir(), "lucena-echo-"));
    const store = new KeyStore(dir);
    const token = "admin-token-0123456789";
    const app = buildApp({
      registry: new ModelRegistry([{ config: TEST_MODEL, engine: new FakeEngine(), demo: false }]),
      keys: new StaticKeys([TEST_KEY]),
      log: pino({ level: "silent" }),
      bodyLimit: 1 << 16,
      alwaysStream: false,
      keepaliveMs: 60_000,
      admin: { token, store },
    });
    t.after(async () => {
      await app.close();
      store.close();
      rmSync(dir, { recursive: true, force: true });
    });
    const res = await app.inject({
      method: "DELETE",
      url: `/admin/v1/keys/${"k".repeat(100)}`,
      headers: { authorization: `Bearer ${token}` },
    });
    const e = assertError(res, 404, "not_found");
    assert.ok(e.message.includes(`'${"k".repeat(64)}…'`), e.message);
  });
});
