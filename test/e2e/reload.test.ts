import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { testModel } from "../helpers/models.js";
import { startServer } from "../helpers/server.js";
import { until } from "../helpers/until.js";

const K1 = "sk-lucena-reload-one-0000000000000000000000000a";
const K2 = "sk-lucena-reload-two-0000000000000000000000000b";

/**
 * SIGHUP reloads the configuration file, as nginx does: configured keys, the log level and the models' settings
 * that do not touch an engine take effect at once; engine settings are named as needing a restart; a broken file
 * changes nothing; the process never stops.
 */
describe("SIGHUP", () => {
  test("reloads keys, log level, a model's identity and shapes; names what needs a restart; keeps serving", async () => {
    const model = { id: "m", name: "Before", source: testModel(), context_size: 1024, parallel: 1 };
    const server = await startServer({ noConfigKey: true, config: { api_keys: [K1], models: [model] } });
    const file = join(server.dataDir, "config.json");
    const get = (key: string, path = "/v1/models") =>
      fetch(`${server.url}${path}`, { headers: { authorization: `Bearer ${key}` } });
    const chat = (key: string, body: Record<string, unknown>) =>
      fetch(`${server.url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: JSON.stringify({ model: "m", max_tokens: 2, messages: [{ role: "user", content: "hi" }], ...body }),
      });
    const reloaded = async (from: number) =>
      until("the reload's log line", () =>
        server.logs.slice(from).find((l) => l.includes("SIGHUP: configuration") || l.includes("SIGHUP: the")),
      );
    try {
      assert.equal((await get(K1)).status, 200);
      assert.equal((await chat(K1, { shape: "brief" })).status, 400, "no such shape yet");

      let from = server.logs.length;
      writeFileSync(
        file,
        JSON.stringify({
          api_keys: [K2],
          log_level: "warn",
          models: [{ ...model, name: "After", context_size: 2048, shapes: { brief: { max_tokens: 1 } } }],
        }),
      );
      server.proc.kill("SIGHUP");
      const line = JSON.parse(await reloaded(from)) as { msg: string; needRestart?: string[]; logLevel: string };
      assert.equal(line.msg, "SIGHUP: configuration reloaded; some changes need a restart");
      assert.deepEqual(line.needRestart, ['model "m": context_size']);
      assert.equal((await get(K1)).status, 401, "the removed key stops working");
      assert.equal((await get(K2)).status, 200, "the new key works");
      const list = (await (await get(K2)).json()) as { data: { name: string; available_shapes: string[] }[] };
      assert.deepEqual([list.data[0].name, list.data[0].available_shapes], ["After", ["brief"]]);
      const shaped = await chat(K2, { shape: "brief", max_tokens: undefined });
      assert.equal(shaped.status, 200);
      assert.equal(((await shaped.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens, 1);
      const count = await fetch(`${server.url}/v1/tokens/count`, {
        method: "POST",
        headers: { authorization: `Bearer ${K2}`, "content-type": "application/json" },
        body: JSON.stringify({ model: "m", messages: [{ role: "user", content: "hi" }] }),
      });
      assert.equal(
        ((await count.json()) as { limits: { context_size: number } }).limits.context_size,
        1024,
        "the engine's",
      );

      from = server.logs.length;
      writeFileSync(file, "{ not json");
      server.proc.kill("SIGHUP");
      assert.match(await reloaded(from), /did not load; nothing changed/);
      assert.equal((await get(K2)).status, 200, "a broken file changes nothing");
      assert.equal(server.proc.exitCode, null, "still running");
    } finally {
      assert.equal(await server.stop(), 0);
    }
  });
});

describe("SIGHUP and the console", () => {
  test("access_requests: false closes the request form without a restart, and true opens it again", async (t) => {
    // An admin token: without one nobody could decide a request, and the form is closed.
    const admin = { admin_token: "reload-test-admin-token-000" };
    const server = await startServer({ model: testModel(), config: admin, waitReady: false });
    t.after(() => server.stop());
    const file = join(server.dataDir, "config.json");
    // A visitor's page: the CSRF token and its cookie, then the form's POST with both.
    const csrf = await fetch(`${server.url}/console/api/csrf`);
    const cookie = csrf.headers
      .getSetCookie()
      .map((c) => c.split(";")[0])
      .join("; ");
    const { csrf_token } = (await csrf.json()) as { csrf_token: string };
    const ask = () =>
      fetch(`${server.url}/console/api/access-requests`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-csrf-token": csrf_token, cookie },
        body: JSON.stringify({ name: "Ada", contact: "ada@example.org", purpose: "tests" }),
      });
    const open = async () =>
      ((await fetch(`${server.url}/console/api/info`).then((r) => r.json())) as { access_requests_open: boolean })
        .access_requests_open;
    const reload = async (config: Record<string, unknown>) => {
      const from = server.logs.length;
      writeFileSync(file, JSON.stringify(config));
      server.proc.kill("SIGHUP");
      await until("the reload's log line", () =>
        server.logs.slice(from).find((l) => l.includes("SIGHUP: configuration reloaded")),
      );
    };
    assert.equal((await ask()).status, 201);
    await reload({ ...admin, access_requests: false });
    assert.equal(await open(), false);
    assert.equal((await ask()).status, 403);
    await reload({ ...admin, access_requests: true, access_requests_per_hour: 2 });
    assert.equal(await open(), true);
    assert.equal((await ask()).status, 201);
    assert.equal((await ask()).status, 429, "the new hourly limit (2) counts the requests already made");
  });
});
