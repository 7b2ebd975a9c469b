import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import { describe, test } from "node:test";
import { pino } from "pino";
import { Metrics } from "../../src/observability/metrics.js";
import { buildApp } from "../../src/server/app.js";
import type { RequestRecord } from "../../src/core/request-record.js";
import { StaticKeys } from "../../src/keys/verifiers.js";
import { buildOpsApp } from "../../src/server/ops.js";
import { ModelRegistry } from "../../src/server/registry.js";
import { openStreamCount } from "../../src/server/sse.js";
import { AUTH, FakeEngine, TEST_KEY, TEST_MODEL, USER_HELLO } from "../helpers/fake-engine.js";

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the Prometheus text format into samples (comment lines skipped). */
function parse(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the one sample with this name and exactly these labels, or undefined. */
function valueOf(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = samples.filter(
    (s) =>
      s.name === name &&
      Object.keys(s.labels).length === Object.keys(labels).length &&
      Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  assert.ok(found.length <= 1, `${name} ${JSON.stringify(labels)} matched ${found.length} samples`);
  return found[0]?.value;
}

function record(over: Partial<RequestRecord> = {}): RequestRecord {
  return {
    requestId: "req_1",
    method: "POST",
    route: "/v1/chat/completions",
    status: 200,
    durationMs: 300,
    keyId: "config-1",
    aborted: false,
    completion: null,
    ...over,
  };
}

const completion = (
  over: Partial<NonNullable<RequestRecord["completion"]>> = {},
): NonNullable<RequestRecord["completion"]> => ({
  model: "m1",
  stream: true,
  promptTokens: 40,
  completionTokens: 12,
  finishReason: "length",
  ttftMs: 120,
  ...over,
});

describe("metrics", () => {
  test("the observer counts requests, latency, tokens, finishes and TTFT; the gauges read the sources when scraped", async () => {
    let streams = 3;
    const stats = { busy: 2, waiting: 5, sequences: 4, threads: 2, promptTokensEvaluated: 0, promptTokensReused: 0 };
    const metrics = new Metrics({
      models: {
        models: [
          { config: { id: "m1" }, engine: { stats: () => stats } },
          {
            config: { id: "m2" },
            engine: {
              stats: () => ({ busy: 0, waiting: 0, sequences: 0, promptTokensEvaluated: 0, promptTokensReused: 0 }),
            },
          },
        ],
      },
      activeStreams: () => streams,
    });
    metrics.observe(record({ completion: completion() }));
    metrics.observe(
      record({
        durationMs: 2000,
        completion: completion({ promptTokens: 10, completionTokens: 3, finishReason: "stop", ttftMs: 3000 }),
      }),
    );
    metrics.observe(
      record({
        status: 503,
        durationMs: 4,
        completion: completion({ promptTokens: 7, completionTokens: 0, finishReason: null, ttftMs: null }),
      }),
    );
    metrics.observe(record({ method: "GET", route: "/v1/models", durationMs: 2 }));
    metrics.observe(record({ method: "GET", route: null, status: 404, durationMs: 1 }));

    const scraped = await metrics.scrape();
    assert.match(scraped.contentType, /^text\/plain; version=0\.0\.4/);
    const s = parse(scraped.body);
    const chatRoute = "/v1/chat/completions";
    assert.equal(valueOf(s, "lucena_http_requests_total", { route: chatRoute, status: "200" }), 2);
    assert.equal(valueOf(s, "lucena_http_requests_total", { route: chatRoute, status: "503" }), 1);
    assert.equal(valueOf(s, "lucena_http_requests_total", { route: "/v1/models", status: "200" }), 1);
    assert.equal(
      valueOf(s, "lucena_http_requests_total", { route: "(unmatched)", status: "404" }),
      1,
      "a 404 is labelled by no path",
    );

    assert.equal(valueOf(s, "lucena_http_request_duration_seconds_count", { route: chatRoute }), 3);
    assert.equal(valueOf(s, "lucena_http_request_duration_seconds_sum", { route: chatRoute }), 0.3 + 2 + 0.004);
    assert.equal(valueOf(s, "lucena_http_request_duration_seconds_bucket", { route: chatRoute, le: "0.005" }), 1);
    assert.equal(valueOf(s, "lucena_http_request_duration_seconds_bucket", { route: chatRoute, le: "0.5" }), 2);
    assert.equal(valueOf(s, "lucena_http_request_duration_seconds_bucket", { route: chatRoute, le: "2.5" }), 3);

    assert.equal(valueOf(s, "lucena_tokens_total", { model: "m1", kind: "prompt" }), 57);
    assert.equal(valueOf(s, "lucena_tokens_total", { model: "m1", kind: "completion" }), 15);
    assert.equal(valueOf(s, "lucena_completions_total", { model: "m1", finish_reason: "length" }), 1);
    assert.equal(valueOf(s, "lucena_completions_total", { model: "m1", finish_reason: "stop" }), 1);
    assert.equal(valueOf(s, "lucena_completions_total", { model: "m1", finish_reason: "none" }), 1);

    assert.equal(
      valueOf(s, "lucena_time_to_first_token_seconds_count", { model: "m1" }),
      2,
      "no TTFT when no text came",
    );
    assert.equal(valueOf(s, "lucena_time_to_first_token_seconds_bucket", { model: "m1", le: "0.1" }), 0);
    assert.equal(valueOf(s, "lucena_time_to_first_token_seconds_bucket", { model: "m1", le: "0.25" }), 1);
    assert.equal(valueOf(s, "lucena_time_to_first_token_seconds_bucket", { model: "m1", le: "5" }), 2);
    assert.equal(valueOf(s, "lucena_time_to_first_token_seconds_sum", { model: "m1" }), 3.12);

    assert.equal(valueOf(s, "lucena_queue_depth", { model: "m1" }), 5);
    assert.equal(valueOf(s, "lucena_queue_depth", { model: "m2" }), 0);
    assert.equal(valueOf(s, "lucena_sequences_busy", { model: "m1" }), 2);
    assert.equal(valueOf(s, "lucena_engine_threads", { model: "m1" }), 2);
    assert.equal(
      valueOf(s, "lucena_engine_threads", { model: "m2" }),
      undefined,
      "only engines that say how many threads they use",
    );
    assert.equal(valueOf(s, "lucena_active_streams"), 3);
    assert.ok(valueOf(s, "process_cpu_user_seconds_total") !== undefined, "prom-client's default process metrics");
    assert.ok(valueOf(s, "nodejs_heap_size_used_bytes") !== undefined);

    streams = 0;
    stats.waiting = 1;
    stats.threads = 1;
    const again = parse((await metrics.scrape()).body);
    assert.equal(valueOf(again, "lucena_engine_threads", { model: "m1" }), 1);
    assert.equal(valueOf(again, "lucena_active_streams"), 0, "gauges are computed at scrape time");
    assert.equal(valueOf(again, "lucena_queue_depth", { model: "m1" }), 1);
  });

  test("an upstream model has one series per replica, read when scraped; embedded models have none", async () => {
    const replicas = [
      { replica: "http://10.0.0.1:8000/v1", healthy: true, inFlight: 3, requests: 40, failures: 1, ejections: 0 },
      { replica: "http://10.0.0.2:8000/v1", healthy: false, inFlight: 0, requests: 12, failures: 5, ejections: 2 },
    ];
    const idle = { busy: 0, waiting: 0, sequences: 0, promptTokensEvaluated: 0, promptTokensReused: 0 };
    const metrics = new Metrics({
      models: {
        models: [
          { config: { id: "up" }, engine: { stats: () => idle, replicaStats: () => replicas } },
          { config: { id: "local" }, engine: { stats: () => idle } },
        ],
      },
      activeStreams: () => 0,
    });
    const s = parse((await metrics.scrape()).body);
    const [a, b] = replicas.map((r) => ({ model: "up", replica: r.replica }));
    assert.equal(valueOf(s, "lucena_upstream_replica_healthy", a), 1);
    assert.equal(valueOf(s, "lucena_upstream_replica_healthy", b), 0);
    assert.equal(valueOf(s, "lucena_upstream_requests_in_flight", a), 3);
    assert.equal(valueOf(s, "lucena_upstream_requests_total", a), 40);
    assert.equal(valueOf(s, "lucena_upstream_requests_total", b), 12);
    assert.equal(valueOf(s, "lucena_upstream_failures_total", b), 5);
    assert.equal(valueOf(s, "lucena_upstream_ejections_total", b), 2);
    assert.equal(s.filter((x) => x.labels.model === "local" && x.name.startsWith("lucena_upstream_")).length, 0);

    replicas[0].requests = 41;
    replicas[1].healthy = true;
    const again = parse((await metrics.scrape()).body);
    assert.equal(
      valueOf(again, "lucena_upstream_requests_total", a),
      41,
      "counters follow the pool, not add up scrapes",
    );
    assert.equal(valueOf(again, "lucena_upstream_replica_healthy", b), 1);
  });

  test("through the app: a stream is counted open while it runs, and its record reaches the metrics once it is over", async (t) => {
    const engine = new FakeEngine({ script: ["a", "b", "c", "d"] });
    engine.delayMs = 40;
    const registry = new ModelRegistry([{ config: TEST_MODEL, engine, demo: false }]);
    const metrics = new Metrics({ models: registry, activeStreams: openStreamCount });
    const app = buildApp({
      registry,
      keys: new StaticKeys([TEST_KEY]),
      log: pino({ level: "silent" }),
      observers: [metrics.observe],
      bodyLimit: 16 * 1024,
      alwaysStream: false,
      keepaliveMs: 60_000,
    });
    t.after(() => app.close());
    await app.listen({ host: "127.0.0.1", port: 0 });
    const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    const before = openStreamCount();

    const res = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { ...AUTH, "content-type": "application/json" },
      body: JSON.stringify({ model: TEST_MODEL.id, messages: USER_HELLO, stream: true }),
    });
    const reader = res.body!.getReader();
    await reader.read(); // ": connected"
    const during = parse((await metrics.scrape()).body);
    assert.equal(valueOf(during, "lucena_active_streams"), before + 1);
    assert.equal(valueOf(during, "lucena_sequences_busy", { model: TEST_MODEL.id }), 1);
    while (!(await reader.read()).done);

    // The record is given to observers once the response has closed and the generation has settled.
    let after = parse((await metrics.scrape()).body);
    for (
      let i = 0;
      i < 50 && valueOf(after, "lucena_tokens_total", { model: TEST_MODEL.id, kind: "completion" }) === undefined;
      i++
    ) {
      await new Promise((r) => setTimeout(r, 10));
      after = parse((await metrics.scrape()).body);
    }
    assert.equal(valueOf(after, "lucena_active_streams"), before);
    assert.equal(valueOf(after, "lucena_http_requests_total", { route: "/v1/chat/completions", status: "200" }), 1);
    assert.equal(valueOf(after, "lucena_tokens_total", { model: TEST_MODEL.id, kind: "completion" }), 4);
    assert.ok((valueOf(after, "lucena_tokens_total", { model: TEST_MODEL.id, kind: "prompt" }) ?? 0) > 0);
    assert.equal(valueOf(after, "lucena_completions_total", { model: TEST_MODEL.id, finish_reason: "stop" }), 1);
    assert.equal(valueOf(after, "lucena_time_to_first_token_seconds_count", { model: TEST_MODEL.id }), 1);
    const ttft = valueOf(after, "lucena_time_to_first_token_seconds_sum", { model: TEST_MODEL.id })!;
    assert.ok(ttft >= 0.03 && ttft < 5, `TTFT ${ttft}s covers the engine's first-token delay`);
  });
});

describe("the operations app", () => {
  test("/health: 200 ok when every model is ready; 503 degraded, same shape, while one loads or failed", async (t) => {
    const a = new FakeEngine({ status: "ready" });
    const b = new FakeEngine({ modelId: "other", status: "loading" });
    const registry = new ModelRegistry([
      { config: TEST_MODEL, engine: a, demo: false },
      { config: { ...TEST_MODEL, id: "other" }, engine: b, demo: false },
    ]);
    const ops = buildOpsApp({
      registry,
      metrics: new Metrics({ models: registry, activeStreams: () => 0 }),
      log: pino({ level: "silent" }),
    });
    t.after(() => ops.close());

    let res = await ops.inject({ method: "GET", url: "/health" });
    assert.equal(res.statusCode, 503);
    assert.deepEqual(res.json(), { status: "degraded", models: { [TEST_MODEL.id]: "ready", other: "loading" } });
    b.status = "failed";
    res = await ops.inject({ method: "GET", url: "/health" });
    assert.deepEqual([res.statusCode, res.json().models.other], [503, "failed"]);
    b.status = "ready";
    res = await ops.inject({ method: "GET", url: "/health" });
    assert.equal(res.statusCode, 200);
    assert.deepEqual(res.json(), { status: "ok", models: { [TEST_MODEL.id]: "ready", other: "ready" } });

    const m = await ops.inject({ method: "GET", url: "/metrics" });
    assert.equal(m.statusCode, 200);
    assert.match(String(m.headers["content-type"]), /^text\/plain; version=0\.0\.4/);
    assert.equal(valueOf(parse(m.body), "lucena_queue_depth", { model: "other" }), 0);

    const missing = await ops.inject({ method: "GET", url: "/v1/models" });
    assert.equal(missing.statusCode, 404, "the operations listener serves no API");
    assert.deepEqual(missing.json(), { error: { message: "Not found.", type: "not_found", code: 404 } });
  });
});
