import assert from "node:assert/strict";
import { asHttp } from "../helpers/errors.js";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { describe, test, type TestContext } from "node:test";
import { pino } from "pino";
import { DEFAULT_MODEL, DEFAULT_UPSTREAM } from "../../src/config/defaults.js";
import type { ModelConfig, UpstreamConfig } from "../../src/config/schema.js";
import { sampling, type EngineEvent, type GenerateOptions } from "../../src/engines/engine.js";
import { UpstreamEngine } from "../../src/engines/upstream/upstream-engine.js";
import { buildApp } from "../../src/server/app.js";
import { StaticKeys } from "../../src/keys/verifiers.js";
import { LucenaError } from "../../src/core/errors.js";
import { ModelRegistry } from "../../src/server/registry.js";
import { chat, TEST_KEY } from "../helpers/fake-engine.js";
import { listen } from "../helpers/sockets.js";
import { until } from "../helpers/until.js";

/**
 * An upstream model's admission (a bounded queue in front of its replicas) and what happens to requests on a
 * replica that stops answering: real node:http servers on 127.0.0.1 stand for the replicas.
 */

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

type Handler = (res: ServerResponse) => void | Promise<void>;

interface Replica {
  origin: string;
  /** Chat completions received. */
  chats: number;
  /** While true, the replica answers nothing at all, probes included: a stopped process whose kernel still accepts. */
  frozen: boolean;
  handler: Handler;
}

/** A replica: health probes pass unless frozen; chat completions go to `handler` (unless frozen: never answered). */
async function replica(t: TestContext, handler: Handler): Promise<Replica> {
  const sockets = new Set<Socket>();
  const r: Replica = { origin: "", chats: 0, frozen: false, handler };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    req.resume();
    req.on("end", () => {
      if (r.frozen) return;
      if (req.method === "GET")
        return void res.writeHead(200, { "content-type": "application/json" }).end('{"object":"list","data":[]}');
      r.chats++;
      void r.handler(res);
    });
  });
  server.on("connection", (s) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  r.origin = `http://127.0.0.1:${await listen(server)}`;
  t.after(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return r;
}

const frame = (body: unknown) => `data: ${JSON.stringify(body)}\n\n`;
const delta = (content: string) => frame({ choices: [{ index: 0, delta: { content }, finish_reason: null }] });

/** A complete answer: the texts, then finish, usage and [DONE]. */
async function answer(res: ServerResponse, texts: string[], pauseMs = 0): Promise<void> {
  if (!res.headersSent) res.writeHead(200, { "content-type": "text/event-stream" }).flushHeaders();
  if (pauseMs > 0) await sleep(pauseMs);
  for (const text of texts) res.write(delta(text));
  res.write(
    frame({
      choices: [{ index: 0, delta: {}, finish_reason: "stop" }],
      usage: { prompt_tokens: 5, completion_tokens: texts.length },
    }),
  );
  res.end("data: [DONE]\n\n");
}

/** Headers and one text, then nothing: held until `release` is called. */
function holder(): { handler: Handler; release: () => void; held: () => number } {
  const waiting: Array<() => void> = [];
  return {
    handler: async (res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write(delta("held "));
      await new Promise<void>((resolve) => waiting.push(resolve));
      await answer(res, ["done"]);
    },
    release: () => waiting.splice(0).forEach((f) => f()),
    held: () => waiting.length,
  };
}

function modelConfig(
  replicas: Replica[],
  upstream: Partial<UpstreamConfig>,
  queueSize = DEFAULT_MODEL.queue_size,
): ModelConfig {
  return {
    ...DEFAULT_MODEL,
    queue_size: queueSize,
    upstream: {
      ...DEFAULT_UPSTREAM,
      replicas: replicas.map((r) => ({ url: r.origin, api_key: null })),
      tokenizer: "vllm",
      health_interval_seconds: 0.05,
      ...upstream,
    },
  };
}

async function engineFor(
  t: TestContext,
  config: ModelConfig,
  log = pino({ level: "silent" }),
): Promise<UpstreamEngine> {
  const engine = new UpstreamEngine(config, log);
  t.after(() => engine.close());
  await engine.load();
  return engine;
}

function options(signal = new AbortController().signal): GenerateOptions {
  return {
    ...sampling({ maxTokens: 16, temperature: 0.7 }),
    input: { kind: "messages", messages: [{ role: "user", content: "Hi" }], estimated: false },
    signal,
  };
}

async function collect(
  gen: AsyncGenerator<EngineEvent>,
): Promise<{ text: string; events: EngineEvent[]; error: unknown }> {
  const events: EngineEvent[] = [];
  try {
    for await (const ev of gen) events.push(ev);
    return { text: events.map((e) => (e.type === "text" ? e.text : "")).join(""), events, error: undefined };
  } catch (error) {
    return { text: events.map((e) => (e.type === "text" ? e.text : "")).join(""), events, error };
  }
}

describe("upstream admission: a bounded queue in front of the replicas", () => {
  test("max_in_flight_per_replica go at once, queue_size wait, the next gets a queue-full 503 synchronously", async (t) => {
    const hold = holder();
    const a = await replica(t, hold.handler);
    const engine = await engineFor(t, modelConfig([a], { max_in_flight_per_replica: 2 }, 3));
    const running = Array.from({ length: 5 }, () => collect(engine.generate(options())));
    assert.deepEqual({ busy: engine.stats().busy, waiting: engine.stats().waiting }, { busy: 2, waiting: 3 });
    assert.throws(
      () => engine.generate(options()),
      (err: unknown) => {
        assert.ok(err instanceof LucenaError);
        assert.equal(asHttp(err).status, 503);
        assert.match(err.message, /busy: too many requests are waiting/);
        assert.equal(asHttp(err).headers["retry-after"], "1");
        return true;
      },
    );
    await until("two requests held on the replica", () => hold.held() === 2);
    assert.equal(a.chats, 2, "the waiting ones were not sent");
    // Places free as answers end: the waiting requests go, in turn, never more than two at once.
    while (a.chats < 5 || hold.held() > 0) {
      assert.ok(engine.stats().busy <= 2);
      hold.release();
      await sleep(5);
    }
    for (const r of await Promise.all(running)) assert.equal(r.text, "held done");
    assert.deepEqual({ busy: engine.stats().busy, waiting: engine.stats().waiting }, { busy: 0, waiting: 0 });
  });

  test("a waiting request whose client goes away leaves the queue at once and is never sent", async (t) => {
    const hold = holder();
    const a = await replica(t, hold.handler);
    const engine = await engineFor(t, modelConfig([a], { max_in_flight_per_replica: 1 }, 1));
    const first = collect(engine.generate(options()));
    const ac = new AbortController();
    const queued = collect(engine.generate(options(ac.signal)));
    assert.equal(engine.stats().waiting, 1);
    ac.abort();
    assert.equal(engine.stats().waiting, 0);
    assert.deepEqual((await queued).events, [{ type: "done", finishReason: "cancelled", completionTokens: 0 }]);
    const next = collect(engine.generate(options())); // the place in the queue is free again
    await until("the first request held", () => hold.held() === 1);
    hold.release();
    await until("the next request held", () => hold.held() === 1);
    hold.release();
    assert.equal((await first).text, "held done");
    assert.equal((await next).text, "held done");
    assert.equal(a.chats, 2);
  });

  test("through the route: 503 with Retry-After before any header, and /v1/stats shows busy and waiting", async (t) => {
    const hold = holder();
    const a = await replica(t, hold.handler);
    const config = { ...modelConfig([a], { max_in_flight_per_replica: 1 }, 1), id: "up" };
    const log = pino({ level: "silent" });
    const engine = await engineFor(t, config, log);
    const app = buildApp({
      registry: new ModelRegistry([{ config, engine, demo: false }]),
      keys: new StaticKeys([TEST_KEY]),
      log,
      bodyLimit: 1 << 20,
      alwaysStream: false,
      keepaliveMs: 60_000,
    });
    t.after(() => app.close());
    const body = { model: "up", max_tokens: 4, messages: [{ role: "user", content: "Hi" }] };
    const admitted = [chat(app, body), chat(app, body)];
    await until("one in flight, one waiting", () => engine.stats().busy === 1 && engine.stats().waiting === 1);
    const stats = await app.inject({
      method: "GET",
      url: "/v1/stats",
      headers: { authorization: `Bearer ${TEST_KEY}` },
    });
    const up = (JSON.parse(stats.payload) as { models: Record<string, { busy: number; waiting: number }> }).models.up;
    assert.deepEqual({ busy: up.busy, waiting: up.waiting }, { busy: 1, waiting: 1 });
    const refused = await chat(app, body);
    assert.equal(refused.statusCode, 503);
    assert.equal(refused.headers["retry-after"], "1");
    assert.equal((JSON.parse(refused.payload) as { error: { type: string } }).error.type, "server_error");
    while (hold.held() > 0 || a.chats < 2) {
      hold.release();
      await sleep(5);
    }
    for (const res of await Promise.all(admitted)) assert.equal(res.statusCode, 200);
  });
});

describe("upstream: a replica that stops answering", () => {
  test("requests on a replica frozen before their headers are retried on the other when it is ejected", async (t) => {
    const a = await replica(t, (res) => answer(res, ["from A"]));
    const b = await replica(t, (res) => answer(res, ["from B"]));
    // A first-byte bound far above the test's length: only the ejection can free these requests.
    const engine = await engineFor(t, modelConfig([a, b], { first_byte_timeout_seconds: 600, failures_to_eject: 2 }));
    a.frozen = true;
    const answers = Array.from({ length: 4 }, () => collect(engine.generate(options())));
    await until("A to be ejected", () => engine.pool.replicas[0].state === "ejected");
    for (const r of await Promise.all(answers)) {
      assert.equal(r.error, undefined);
      assert.equal(r.text, "from B");
    }
    assert.ok(a.chats === 0 && b.chats === 4, `A answered ${a.chats}, B ${b.chats}`);
  });

  test("silence before the first text is allowed up to first_token_timeout_seconds, then retried elsewhere", async (t) => {
    const a = await replica(t, (res) => answer(res, ["slow A"], 400));
    const b = await replica(t, (res) => answer(res, ["from B"]));
    // Silent for 400 ms after its headers: longer than idle_timeout, within first_token_timeout.
    const patient = await engineFor(
      t,
      modelConfig([a, b], { idle_timeout_seconds: 0.1, first_token_timeout_seconds: 5 }),
    );
    assert.equal((await collect(patient.generate(options()))).text, "slow A");
    const hasty = await engineFor(
      t,
      modelConfig([a, b], { idle_timeout_seconds: 5, first_token_timeout_seconds: 0.1 }),
    );
    assert.equal((await collect(hasty.generate(options()))).text, "from B");
  });

  test("a stream whose replica goes silent after its first text ends with an error after idle_timeout_seconds", async (t) => {
    const a = await replica(t, (res) => {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write(delta("partial"));
      // and then nothing, the connection open
    });
    const engine = await engineFor(t, modelConfig([a], { idle_timeout_seconds: 0.2 }));
    const r = await collect(engine.generate(options()));
    assert.equal(r.text, "partial");
    assert.ok(r.error instanceof LucenaError);
    assert.equal(asHttp(r.error).status, 500);
    assert.match(r.error.message, /failed while answering/);
  });
});
