import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { pino } from "pino";
import { buildApp } from "../../src/server/app.js";
import { StaticKeys } from "../../src/server/auth.js";
import { health } from "../../src/server/ops.js";
import { ModelRegistry } from "../../src/server/registry.js";
import { AUTH, assertError, chat, count, FakeEngine, post, setup, TEST_KEY, TEST_MODEL, USER_HELLO } from "../helpers/fake-engine.js";

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
    const shapes = JSON.parse('{"__proto__": {"system_prompt": "Be odd."}, "constructor": {"system_prompt": "Be built."}}') as typeof TEST_MODEL.shapes;
    const { app } = setup(t, { model: { shapes } });
    for (const name of ["__proto__", "constructor"]) {
      const res = await count(app, { ...GOOD, shape: name });
      assert.equal(res.statusCode, 200, res.body);
      assert.equal((JSON.parse(res.body) as { _lucena: { shape_id: string } })._lucena.shape_id, name);
    }
    assertError(await count(app, { ...GOOD, shape: "toString" }), 400, "invalid_request_error", { param: "shape" });
  });

  test("a model whose id is an inherited name is listed under that id in /v1/stats and /health", async (t) => {
    const models = ["__proto__", "constructor"].map((id) => ({ config: { ...TEST_MODEL, id }, engine: new FakeEngine({ modelId: id }), demo: false }));
    const registry = new ModelRegistry(models);
    const app = buildApp({ registry, keys: new StaticKeys([TEST_KEY]), log: pino({ level: "silent" }), bodyLimit: 1 << 16, alwaysStream: false, keepaliveMs: 60_000 });
    t.after(() => app.close());
    const stats = await app.inject({ method: "GET", url: "/v1/stats", headers: AUTH });
    assert.equal(stats.statusCode, 200);
    const body = JSON.parse(stats.body) as { models: Record<string, { status: string }> };
    assert.deepEqual(Object.keys(body.models), ["__proto__", "constructor"]);
    assert.equal(Object.getPrototypeOf(body.models), Object.prototype);
    assert.deepEqual(JSON.parse(JSON.stringify(health(registry))), { status: "ok", models: JSON.parse('{"__proto__":"ready","constructor":"ready"}') });
  });
});
