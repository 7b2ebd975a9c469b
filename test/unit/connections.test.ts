import assert from "node:assert/strict";
import { connect, type AddressInfo, type Socket } from "node:net";
import { describe, test, type TestContext } from "node:test";
import { pino } from "pino";
import { Metrics } from "../../src/observability/metrics.js";
import { buildApp, type RequestRecord } from "../../src/server/app.js";
import { StaticKeys } from "../../src/server/auth.js";
import { ModelRegistry } from "../../src/server/registry.js";
import { FakeEngine, TEST_KEY, TEST_MODEL } from "../helpers/fake-engine.js";

interface LogLine {
  level: number;
  msg: string;
  err?: unknown;
  status?: number;
}

/** An in-process app on a real loopback socket, its log lines and its request records. */
async function listening(t: TestContext, engine = new FakeEngine()) {
  const logs: LogLine[] = [];
  const records: RequestRecord[] = [];
  let recorded: (() => void) | null = null;
  const registry = new ModelRegistry([{ config: TEST_MODEL, engine, demo: false }]);
  const metrics = new Metrics({ models: registry, activeStreams: () => 0 });
  const app = buildApp({
    registry, keys: new StaticKeys([TEST_KEY]),
    log: pino({ level: "info" }, { write: (line: string) => void logs.push(JSON.parse(line) as LogLine) }),
    observers: [metrics.observe, (r) => { records.push(r); recorded?.(); }],
    bodyLimit: 64 * 1024, alwaysStream: false, keepaliveMs: 60_000,
  });
  t.after(() => app.close());
  await app.listen({ host: "127.0.0.1", port: 0 });
  const port = (app.server.address() as AddressInfo).port;
  /** Resolves once `n` requests have been recorded. */
  const recordsAfter = async (n: number) => {
    while (records.length < n) await new Promise<void>((resolve) => (recorded = resolve));
    return records;
  };
  return { app, port, logs, records, metrics, recordsAfter };
}

/** Opens a raw TCP connection and writes `head` (and optionally part of a body) once connected. */
async function rawRequest(port: number, text: string): Promise<Socket> {
  const socket = connect(port, "127.0.0.1");
  socket.on("error", () => undefined);
  await new Promise<void>((resolve) => socket.once("connect", resolve));
  socket.write(text);
  return socket;
}

const head = (length: number, headers = `Authorization: Bearer ${TEST_KEY}\r\n`) =>
  `POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n${headers}Content-Type: application/json\r\nContent-Length: ${length}\r\n\r\n`;

describe("a client that disconnects before its request is read", () => {
  for (const path of ["/v1/chat/completions", "/v1/tokens/count"]) {
    test(`mid-body on ${path}: recorded as 499 at info level, never a 500 or an error log`, async (t) => {
      const { app, port, logs, metrics, recordsAfter } = await listening(t);
      const socket = await rawRequest(port, head(1000).replace("/v1/chat/completions", path) + '{"model":"lucena-coder-latest","messages":[');
      // The server has the head (the request is under way) before the client goes.
      while (app.inFlight() === 0) await new Promise((r) => setTimeout(r, 5));
      socket.destroy();
      const [record] = await recordsAfter(1);
      assert.equal(record.status, 499);
      assert.equal(record.aborted, true);
      assert.equal(record.route, path);
      assert.deepEqual(logs.filter((l) => l.level >= 40), [], "no warning or error is logged");
      assert.ok(logs.some((l) => l.level === 30 && l.msg === "client closed the connection before the answer"));
      assert.ok(logs.some((l) => l.msg === "request" && l.status === 499));
      const text = (await metrics.scrape()).body;
      assert.match(text, new RegExp(`lucena_http_requests_total\\{route="${path}",status="499"\\} 1`));
      assert.doesNotMatch(text, /lucena_http_requests_total\{[^}]*status="500"/);
    });
  }

  test("a JSON completion abandoned before its answer is recorded as 499, not 200", async (t) => {
    const engine = new FakeEngine({ script: ["a", "b", "c", "d", "e", "f"] });
    engine.delayMs = 50;
    const { port, logs, recordsAfter } = await listening(t, engine);
    const body = JSON.stringify({ model: TEST_MODEL.id, messages: [{ role: "user", content: "hi" }] });
    const socket = await rawRequest(port, head(Buffer.byteLength(body)) + body);
    while (engine.calls.length === 0) await new Promise((r) => setTimeout(r, 10));
    socket.destroy();
    const [record] = await recordsAfter(1);
    assert.equal(record.status, 499);
    assert.equal(record.aborted, true);
    assert.equal(record.completion?.finishReason, "cancelled");
    assert.deepEqual(logs.filter((l) => l.level >= 40), []);
  });
});
