import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { connect, type AddressInfo, type Socket } from "node:net";
import { describe, test, type TestContext } from "node:test";
import { pino } from "pino";
import { Metrics } from "../../src/observability/metrics.js";
import { buildApp } from "../../src/server/app.js";
import type { RequestRecord } from "../../src/core/request-record.js";
import { StaticKeys } from "../../src/keys/verifiers.js";
import { ModelRegistry } from "../../src/server/registry.js";
import {
  createRedirectServer,
  readTlsFiles,
  type ConnectionLimits,
  type TransportOptions,
} from "../../src/server/transport.js";
import { FakeEngine, TEST_KEY, TEST_MODEL } from "../helpers/fake-engine.js";
import { makeCertificate, opensslMissing } from "../helpers/tls.js";

interface LogLine {
  level: number;
  msg: string;
  err?: unknown;
  status?: number;
}

/** An in-process app on a real loopback socket, its log lines and its request records. */
async function listening(t: TestContext, engine = new FakeEngine(), transport?: TransportOptions) {
  const logs: LogLine[] = [];
  const records: RequestRecord[] = [];
  let recorded: (() => void) | null = null;
  const registry = new ModelRegistry([{ config: TEST_MODEL, engine, demo: false }]);
  const metrics = new Metrics({ models: registry, activeStreams: () => 0 });
  const app = buildApp({
    registry,
    keys: new StaticKeys([TEST_KEY]),
    log: pino({ level: "info" }, { write: (line: string) => void logs.push(JSON.parse(line) as LogLine) }),
    observers: [
      metrics.observe,
      (r) => {
        records.push(r);
        recorded?.();
      },
    ],
    bodyLimit: 1024 * 1024,
    alwaysStream: false,
    keepaliveMs: 60_000,
    ...(transport ? { transport } : {}),
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
      const socket = await rawRequest(
        port,
        head(1000).replace("/v1/chat/completions", path) + '{"model":"lucena-coder-latest","messages":[',
      );
      // The server has the head (the request is under way) before the client goes.
      while (app.inFlight() === 0) await new Promise((r) => setTimeout(r, 5));
      socket.destroy();
      const [record] = await recordsAfter(1);
      assert.equal(record.status, 499);
      assert.equal(record.aborted, true);
      assert.equal(record.route, path);
      assert.deepEqual(
        logs.filter((l) => l.level >= 40),
        [],
        "no warning or error is logged",
      );
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
    assert.deepEqual(
      logs.filter((l) => l.level >= 40),
      [],
    );
  });
});

// Short limits, so that each test takes a moment; nothing below asserts how fast the server is, only what it does.
const LIMITS: ConnectionLimits = { headersTimeoutMs: 300, requestTimeoutMs: 600, maxConnections: 100 };
const transport = (over: Partial<TransportOptions> = {}): TransportOptions => ({
  tls: null,
  hstsMaxAgeSeconds: 0,
  corsOrigins: [],
  maxHeaderBytes: 16 * 1024,
  ...LIMITS,
  ...over,
});

/** Everything the server sent on this connection, once the server has closed it. */
function serverCloses(socket: Socket): Promise<string> {
  let got = "";
  socket.setEncoding("utf8").on("data", (d: string) => (got += d));
  return new Promise((resolve) => socket.once("close", () => resolve(got)));
}

/** Writes one byte every 50 ms while the socket is open: a body or head that never finishes. */
function trickle(socket: Socket, byte: string): void {
  const timer = setInterval(() => (socket.writable ? socket.write(byte) : clearInterval(timer)), 50);
  socket.once("close", () => clearInterval(timer));
}

/** The 408 of clientErrorHandler, in the API's error shape, then the end of the connection. */
function assert408(got: string): void {
  assert.match(got, /^HTTP\/1\.1 408 Request Timeout\r\n/);
  assert.match(got, /\r\nconnection: close\r\n/);
  const body = JSON.parse(got.slice(got.indexOf("\r\n\r\n") + 4)) as { error: { type: string; code: number } };
  assert.deepEqual([body.error.type, body.error.code], ["invalid_request_error", 408]);
}

describe("requests that never finish arriving do not keep their connection", { timeout: 30_000 }, () => {
  test("a body trickled a byte at a time (Content-Length 100000), with a key: 408, closed, recorded as 408", async (t) => {
    const { port, recordsAfter, logs } = await listening(t, new FakeEngine(), transport());
    const socket = await rawRequest(port, head(100_000) + "{");
    trickle(socket, " ");
    assert408(await serverCloses(socket));
    const [record] = await recordsAfter(1);
    assert.equal(record.status, 408);
    assert.deepEqual(
      logs.filter((l) => l.level >= 40),
      [],
    );
  });

  test("the same body without a key: answered 401 at once, and the connection still closed", async (t) => {
    const { port } = await listening(t, new FakeEngine(), transport());
    const socket = await rawRequest(port, head(100_000, "") + "{");
    trickle(socket, " ");
    const got = await serverCloses(socket);
    assert.match(got, /^HTTP\/1\.1 401 /);
  });

  test("a head trickled a header at a time: 408 and closed", async (t) => {
    const { port } = await listening(t, new FakeEngine(), transport());
    const socket = await rawRequest(port, "GET /v1/models HTTP/1.1\r\nHost: localhost\r\n");
    trickle(socket, "X");
    assert408(await serverCloses(socket));
  });

  test("a connection that sends nothing is closed (with the same 408, as Node answers an idle connection)", async (t) => {
    const { port } = await listening(t, new FakeEngine(), transport());
    const socket = await rawRequest(port, "");
    assert408(await serverCloses(socket));
  });

  test("a stream longer than the request timeout runs to its end: the timeout covers receiving the request only", async (t) => {
    const engine = new FakeEngine({ script: Array.from({ length: 12 }, (_, i) => `w${i} `) });
    engine.delayMs = 100; // 1.2 s of stream against a 600 ms request timeout
    const { port, recordsAfter } = await listening(t, engine, transport());
    const body = JSON.stringify({ model: TEST_MODEL.id, stream: true, messages: [{ role: "user", content: "hi" }] });
    const socket = await rawRequest(port, head(Buffer.byteLength(body)) + body);
    // An SSE response keeps its connection alive: read to the chunked body's last chunk, then close.
    let got = "";
    socket.setEncoding("utf8");
    for await (const chunk of socket) {
      got += chunk as string;
      if (got.endsWith("\r\n0\r\n\r\n")) break;
    }
    socket.destroy();
    assert.match(got, /^HTTP\/1\.1 200 /);
    assert.ok(got.includes("w11 "), "every token arrived");
    assert.ok(got.includes("data: [DONE]\n\n"), got.slice(-200));
    const [record] = await recordsAfter(1);
    assert.deepEqual([record.status, record.aborted, record.completion?.finishReason], [200, false, "stop"]);
  });

  test("connections over max_connections are closed at once; a freed slot serves again", async (t) => {
    const { port, logs } = await listening(
      t,
      new FakeEngine(),
      transport({ maxConnections: 2, headersTimeoutMs: 10_000, requestTimeoutMs: 10_000 }),
    );
    const models = `GET /v1/models HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${TEST_KEY}\r\n\r\n`;
    const held = [await rawRequest(port, ""), await rawRequest(port, "")];
    const third = await rawRequest(port, models);
    assert.equal(await serverCloses(third), "", "the connection over the cap got no answer");
    assert.ok(logs.some((l) => l.level === 40 && l.msg === "connection limit reached: new connections are closed"));
    const freed = serverCloses(held[0]);
    held[0].destroy();
    await freed;
    const fourth = await rawRequest(port, models.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n"));
    assert.match(await serverCloses(fourth), /^HTTP\/1\.1 200 /);
    held[1].destroy();
  });
});

test(
  "over HTTPS, a connection that never completes its TLS handshake is closed after the headers timeout",
  { skip: opensslMissing, timeout: 30_000 },
  async (t) => {
    const tls = makeCertificate();
    t.after(() => rmSync(tls.dir, { recursive: true, force: true }));
    const { port } = await listening(t, new FakeEngine(), transport({ tls: readTlsFiles(tls.cert, tls.key) }));
    // Raw TCP: no ClientHello is ever sent, so no HTTP parser (and no headers timeout of its own) exists yet.
    const socket = await rawRequest(port, "");
    assert.equal(await serverCloses(socket), "");
  },
);

describe("the redirect listener has the same limits", { timeout: 30_000 }, () => {
  async function redirectServer(t: TestContext, limits: ConnectionLimits) {
    const server = createRedirectServer({
      httpsPort: 8443,
      maxHeaderBytes: 16 * 1024,
      limits,
      log: pino({ level: "silent" }),
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    t.after(() => {
      server.closeAllConnections();
      server.close();
    });
    return (server.address() as AddressInfo).port;
  }

  test("a trickled head gets 408 and is closed; so is a connection that sends nothing", async (t) => {
    const port = await redirectServer(t, LIMITS);
    const slow = await rawRequest(port, "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n");
    trickle(slow, "X");
    const idle = await rawRequest(port, "");
    assert408(await serverCloses(slow));
    assert408(await serverCloses(idle));
  });

  test("a trickled body after the 308 does not keep the connection", async (t) => {
    const port = await redirectServer(t, LIMITS);
    const socket = await rawRequest(
      port,
      "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n{",
    );
    trickle(socket, " ");
    assert.match(await serverCloses(socket), /^HTTP\/1\.1 308 /);
  });

  test("connections over the cap are closed at once", async (t) => {
    const port = await redirectServer(t, {
      ...LIMITS,
      headersTimeoutMs: 10_000,
      requestTimeoutMs: 10_000,
      maxConnections: 1,
    });
    const held = await rawRequest(port, "");
    const over = await rawRequest(port, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert.equal(await serverCloses(over), "");
    held.destroy();
  });
});
