import assert from "node:assert/strict";
import { test } from "node:test";
import { assertError, AUTH, chat, setup, sseEvents, USER_HELLO } from "../helpers/fake-engine.js";

test("while closing, a new request gets the API's 503 with Retry-After", async (t) => {
  const { app } = setup(t);
  app.lifecycle.closing = true;
  const res = await app.inject({ method: "GET", url: "/v1/models", headers: AUTH });
  assertError(res, 503, "server_error");
  assert.ok(Number(res.headers["retry-after"]) > 0);
});

test("the shutdown deadline ends a running stream with an error event and [DONE], and a JSON request with 503", async (t) => {
  const { app, engine } = setup(t);
  engine.script = Array.from({ length: 200 }, (_, i) => `w${i} `);
  engine.delayMs = 5;
  // The deadline comes once both generations have produced text (never on a timer: a busy machine starts late).
  void (async () => {
    while (engine.active < 2 || engine.yielded < 10) await new Promise((r) => setTimeout(r, 1));
    app.lifecycle.stop.abort();
  })();
  const [stream, json] = await Promise.all([
    chat(app, { model: "lucena-coder-latest", stream: true, messages: USER_HELLO }),
    chat(app, { model: "lucena-coder-latest", messages: USER_HELLO }),
  ]);
  const events = sseEvents(stream.payload);
  assert.equal(events.at(-1), "data: [DONE]");
  assert.deepEqual(JSON.parse(events.at(-2)!.slice(6)), {
    error: { message: "The server is shutting down.", type: "server_error", code: 503 },
  });
  assert.ok(
    events.some((e) => e.includes('"content"')),
    "it was streaming before the deadline",
  );
  assertError(json, 503, "server_error");
  assert.ok(
    engine.finished.every((e) => e.type === "done" && e.finishReason === "cancelled"),
    "both generations were stopped",
  );
});
