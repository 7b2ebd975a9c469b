import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { PAGES } from "../../src/server/console/pages.js";
import { testModel } from "../helpers/models.js";
import { startServer } from "../helpers/server.js";

const CONSOLE_PATHS = [...Object.keys(PAGES), "/assets/visitor.js", "/console/api/info", "/console/api/csrf"];

describe("the console as `lucena serve` configures it", () => {
  test("on by default: its pages and built assets are served on the API's port", async (t) => {
    const server = await startServer({ model: testModel(), waitReady: false });
    t.after(() => server.stop());
    for (const path of CONSOLE_PATHS) {
      const res = await fetch(`${server.url}${path}`);
      assert.equal(res.status, 200, path);
      await res.arrayBuffer();
    }
    const script = await fetch(`${server.url}/assets/visitor.js`);
    assert.match(String(script.headers.get("content-type")), /javascript/);
    const info = (await fetch(`${server.url}/console/api/info`).then((r) => r.json())) as {
      models: Array<{ id: string }>;
    };
    assert.deepEqual(
      info.models.map((m) => m.id),
      ["lucena-coder-latest"],
    );
    assert.ok(
      server.logs.some((l) => l.includes("set admin_token (or LUCENA_ADMIN_TOKEN)")),
      "without an admin token, the log says what the console lacks",
    );
    // The start-up line says where the console is.
    const listening = server.logs
      .map((l) => JSON.parse(l) as { msg?: string; console?: string })
      .find((l) => l.msg === "listening");
    assert.equal(listening?.console, `${server.url}/console`);
  });

  test("console: false answers the API's 404 on every console path", async (t) => {
    const server = await startServer({ model: testModel(), config: { console: false }, waitReady: false });
    t.after(() => server.stop());
    for (const path of CONSOLE_PATHS) {
      const res = await fetch(`${server.url}${path}`);
      assert.equal(res.status, 404, path);
      assert.deepEqual(await res.json(), { error: { message: "Not found.", type: "not_found", code: 404 } });
    }
    const post = await fetch(`${server.url}/console/api/access-requests`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name: "a", contact: "b", purpose: "c" }),
    });
    assert.equal(post.status, 404);
    const listening = server.logs
      .map((l) => JSON.parse(l) as { msg?: string; console?: string })
      .find((l) => l.msg === "listening");
    assert.equal(listening?.console, undefined);
  });

  test("trust_proxy: true is warned of at start: any client could then choose its address", async (t) => {
    const server = await startServer({ model: testModel(), config: { trust_proxy: true }, waitReady: false });
    t.after(() => server.stop());
    const warned = server.logs.find((l) => l.includes("trust_proxy is true"));
    assert.ok(warned, "a warning at start");
    assert.equal((JSON.parse(warned) as { level: number }).level, 40);
  });
});
