import assert from "node:assert/strict";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import { describe, test, type TestContext } from "node:test";
import {
  Replica,
  ReplicaPool,
  attempts,
  type Lease,
  type ProbeTimer,
  type ReplicaConfig,
  type ReplicaPoolOptions,
} from "../../src/engines/upstream/replicas.js";
import { listen } from "../helpers/sockets.js";
import { until } from "../helpers/until.js";

interface LogLine {
  level: "warn" | "info";
  obj: object;
  msg: string;
}

/** A fake upstream: answers `status` to everything and records the headers of each request. */
interface FakeReplica {
  url: string;
  port: number;
  status: number;
  /** When set, the status of the n-th request (1-based), instead of `status`. */
  statusOf?: (n: number) => number;
  seen: IncomingHttpHeaders[];
  paths: string[];
  /** When set, requests to this path get no answer. */
  hangPath: string | null;
  /** TCP connections accepted. */
  connections: number;
  stop(): Promise<void>;
  restart(): Promise<void>;
}

async function fakeReplica(t: TestContext, basePath = "/v1"): Promise<FakeReplica> {
  let server: Server;
  const fake: FakeReplica = {
    url: "",
    port: 0,
    status: 200,
    seen: [],
    paths: [],
    hangPath: null,
    connections: 0,
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
    async restart() {
      server = make();
      await listen(server, fake.port);
    },
  };
  const make = () =>
    createServer((req, res) => {
      if (req.url === fake.hangPath) return;
      fake.seen.push(req.headers);
      fake.paths.push(req.url ?? "");
      res.writeHead(fake.statusOf?.(fake.seen.length) ?? fake.status, { "content-type": "application/json" });
      res.end(JSON.stringify({ object: "list", data: [] }));
    }).on("connection", () => fake.connections++);
  server = make();
  fake.port = await listen(server, 0);
  fake.url = `http://127.0.0.1:${fake.port}${basePath}`;
  t.after(() => (server.listening ? fake.stop() : undefined));
  return fake;
}

function options(overrides: Partial<ReplicaPoolOptions> = {}): ReplicaPoolOptions & { lines: LogLine[] } {
  const lines: LogLine[] = [];
  return {
    healthPath: "/v1/models",
    healthIntervalMs: 50,
    // A hang guard only: no test here depends on a probe's speed.
    healthTimeoutMs: 10_000,
    failuresToEject: 3,
    probesToReadmit: 2,
    connectTimeoutMs: 500,
    log: {
      warn: (obj, msg) => lines.push({ level: "warn", obj, msg }),
      info: (obj, msg) => lines.push({ level: "info", obj, msg }),
    },
    lines,
    ...overrides,
  };
}

/** A pool whose replicas are never contacted (no start()), for selection and bookkeeping tests. */
function offlinePool(t: TestContext, n: number, overrides: Partial<ReplicaPoolOptions> = {}) {
  const configs: ReplicaConfig[] = Array.from({ length: n }, (_, i) => ({
    url: `http://127.0.0.1:${9000 + i}/v1`,
    apiKey: null,
  }));
  const opts = options(overrides);
  const pool = new ReplicaPool(configs, opts);
  t.after(() => pool.close());
  return { pool, lines: opts.lines };
}

/**
 * A probe clock advanced by hand: probes the pool schedules wait here until `round()` runs them all and waits for
 * them to end (each then schedules its next). Probe rounds are counted, not timed.
 */
function handClock() {
  const due = new Set<() => Promise<void>>();
  const timer: ProbeTimer = (probe) => {
    due.add(probe);
    return () => due.delete(probe);
  };
  return {
    timer,
    get pending(): number {
      return due.size;
    },
    async round(): Promise<void> {
      const now = [...due];
      due.clear();
      await Promise.all(now.map((probe) => probe()));
    },
  };
}

describe("Replica", () => {
  test("path() prefixes the base path, originPath() ignores it, with or without trailing slashes", () => {
    const cases: [string, string][] = [
      ["http://h:8000/v1", "/v1/chat/completions"],
      ["http://h:8000/v1/", "/v1/chat/completions"],
      ["http://h:8000/v1//", "/v1/chat/completions"],
      ["http://h:8000", "/chat/completions"],
      ["http://h:8000/", "/chat/completions"],
      ["https://h/openai/v1", "/openai/v1/chat/completions"],
    ];
    for (const [url, full] of cases) {
      const r = new Replica({ url, apiKey: null }, 1000);
      assert.equal(r.path("/chat/completions"), full, url);
      assert.equal(r.path("chat/completions"), full, `${url} without a leading slash`);
      assert.equal(r.originPath("/tokenize"), "/tokenize", url);
      assert.equal(r.originPath("health"), "/health", url);
      void r.dispatcher.destroy();
    }
  });

  test("label is origin and base path; neither label nor url carries credentials", () => {
    const r = new Replica({ url: "http://user:s3cret@10.0.0.5:8000/v1/", apiKey: "sk-key" }, 1000);
    assert.equal(r.label, "http://10.0.0.5:8000/v1");
    assert.ok(!r.url.includes("s3cret") && !r.url.includes("user"), r.url);
    assert.ok(!r.label.includes("sk-key") && !r.url.includes("sk-key"));
    const plain = new Replica({ url: "http://host:8080", apiKey: null }, 1000);
    assert.equal(plain.label, "http://host:8080");
    assert.equal(plain.url, "http://host:8080", "kept as configured");
    void r.dispatcher.destroy();
    void plain.dispatcher.destroy();
  });

  test("headers carry the bearer key only when there is one", () => {
    const keyed = new Replica({ url: "http://h:1/v1", apiKey: "sk-a" }, 1000);
    const open = new Replica({ url: "http://h:1/v1", apiKey: null }, 1000);
    assert.deepEqual(keyed.headers(), { "content-type": "application/json", authorization: "Bearer sk-a" });
    assert.deepEqual(open.headers(), { "content-type": "application/json" });
    void keyed.dispatcher.destroy();
    void open.dispatcher.destroy();
  });

  test("a bad URL is refused without echoing it", () => {
    assert.throws(
      () => new Replica({ url: "not a url sk-secret", apiKey: null }, 1000),
      (err: Error) => !err.message.includes("sk-secret"),
    );
    assert.throws(
      () => new Replica({ url: "ftp://u:pw@h/v1", apiKey: null }, 1000),
      (err: Error) => !err.message.includes("pw"),
    );
  });
});

describe("ReplicaPool selection", () => {
  test("equally loaded replicas share requests round-robin", (t) => {
    const { pool } = offlinePool(t, 3);
    const counts = new Map<Replica, number>();
    for (let i = 0; i < 300; i++) {
      const r = pool.pick();
      assert.ok(r);
      const release = pool.begin(r);
      counts.set(r, (counts.get(r) ?? 0) + 1);
      release();
    }
    assert.deepEqual([...counts.values()], [100, 100, 100]);
    assert.deepEqual(
      pool.replicas.map((r) => r.counters.requests),
      [100, 100, 100],
    );
  });

  test("the least loaded replica is picked, and concurrent picks spread", (t) => {
    const { pool } = offlinePool(t, 3);
    const [a, b, c] = pool.replicas;
    const held = [pool.begin(a), pool.begin(a)];
    for (let i = 0; i < 20; i++) {
      const r = pool.pick();
      assert.ok(r === b || r === c, "the busy replica is passed over");
    }
    // Holding every pick: the load stays within one request across replicas.
    const holds: (() => void)[] = [];
    for (let i = 0; i < 10; i++) holds.push(pool.begin(pool.pick()!));
    assert.deepEqual(
      pool.replicas.map((r) => r.outstanding),
      [4, 4, 4],
    );
    for (const release of [...held, ...holds]) release();
    assert.deepEqual(
      pool.replicas.map((r) => r.outstanding),
      [0, 0, 0],
    );
  });

  test("release is idempotent", (t) => {
    const { pool } = offlinePool(t, 1);
    const r = pool.replicas[0];
    const release = pool.begin(r);
    release();
    release();
    assert.equal(r.outstanding, 0);
    assert.equal(r.counters.requests, 1);
  });

  test("exclude skips replicas; null when nothing is left", (t) => {
    const { pool } = offlinePool(t, 2);
    const [a, b] = pool.replicas;
    for (let i = 0; i < 5; i++) assert.equal(pool.pick(new Set([a])), b);
    assert.equal(pool.pick(new Set([a, b])), null);
  });
});

describe("ReplicaPool passive health", () => {
  test("a connection error ejects at once; ejected replicas get no traffic", (t) => {
    const { pool, lines } = offlinePool(t, 2);
    const [a, b] = pool.replicas;
    pool.report(a, "connect");
    assert.equal(a.state, "ejected");
    assert.equal(a.counters.ejections, 1);
    for (let i = 0; i < 5; i++) assert.equal(pool.pick(), b);
    assert.ok(pool.anyHealthy);
    pool.report(b, "connect");
    assert.equal(pool.pick(), null);
    assert.equal(pool.anyHealthy, false);
    const warns = lines.filter((l) => l.level === "warn");
    assert.deepEqual(
      warns.map((l) => l.msg),
      ["replica ejected", "replica ejected"],
    );
    assert.deepEqual(warns[0].obj, { replica: a.label, reason: "connection error" });
  });

  test("server errors eject after failuresToEject in a row; an ok answer resets the streak", (t) => {
    const { pool } = offlinePool(t, 1, { failuresToEject: 3 });
    const r = pool.replicas[0];
    pool.report(r, "server");
    pool.report(r, "server");
    pool.report(r, "ok");
    pool.report(r, "server");
    pool.report(r, "server");
    assert.equal(r.state, "healthy");
    pool.report(r, "server");
    assert.equal(r.state, "ejected");
    assert.equal(r.counters.failures, 5);
    assert.equal(r.counters.ejections, 1);
    pool.report(r, "ok");
    assert.equal(r.state, "ejected", "only probes re-admit");
  });
});

describe("ReplicaPool active health (probes on a hand-driven clock)", () => {
  test("a probe ejects a replica whose server is gone, and re-admits it after probesToReadmit passing probes", async (t) => {
    const up = await fakeReplica(t);
    const down = await fakeReplica(t);
    const clock = handClock();
    const opts = options({ probesToReadmit: 2, probeTimer: clock.timer });
    const pool = new ReplicaPool(
      [
        { url: up.url, apiKey: null },
        { url: down.url, apiKey: null },
      ],
      opts,
    );
    t.after(() => pool.close());
    const [a, b] = pool.replicas;
    pool.start();
    await pool.firstProbes();
    assert.equal(a.state, "healthy");
    assert.equal(b.state, "healthy");
    assert.equal(clock.pending, 2, "each replica's next probe is scheduled");

    await down.stop();
    await clock.round();
    assert.equal(b.state, "ejected", "refused: out at the first probe");
    const ejected = opts.lines.find((l) => l.msg === "replica ejected");
    assert.ok(ejected);
    assert.equal((ejected.obj as { replica: string }).replica, b.label);
    assert.match((ejected.obj as { reason: string }).reason, /health probe failed/);
    assert.equal(a.state, "healthy");
    assert.equal(pool.pick(), a);

    await down.restart();
    await clock.round();
    assert.equal(b.state, "ejected", "one passing probe of two");
    await clock.round();
    assert.equal(b.state, "healthy");
    assert.ok(opts.lines.some((l) => l.level === "info" && l.msg === "replica re-admitted"));
    assert.equal(b.counters.ejections, 1);
  });

  test("a refused probe ejects at once; non-2xx probes eject after failuresToEject; the first round resolves", async (t) => {
    const sick = await fakeReplica(t);
    sick.status = 503;
    const clock = handClock();
    const opts = options({ probeTimer: clock.timer });
    const pool = new ReplicaPool(
      [
        { url: sick.url, apiKey: null },
        { url: "http://127.0.0.1:1/v1", apiKey: null },
      ],
      opts,
    );
    t.after(() => pool.close());
    pool.start();
    await pool.firstProbes();
    // Nobody listens on port 1: out at the first probe. A 503 (busy, still loading) is one strike of three.
    assert.deepEqual(
      pool.replicas.map((r) => r.state),
      ["healthy", "ejected"],
    );
    await clock.round();
    assert.equal(pool.replicas[0].state, "healthy", "two strikes of three");
    await clock.round();
    assert.equal(pool.replicas[0].state, "ejected", "three 503s in a row");
    assert.equal(pool.anyHealthy, false);
    const reasons = opts.lines.map((l) => (l.obj as { reason: string }).reason);
    assert.ok(reasons.includes("health probe failed: HTTP 503"), reasons.join(", "));
    assert.ok(
      reasons.some((r) => r.startsWith("health probe failed: ECONN")),
      reasons.join(", "),
    );
  });

  test("failed probes between passing ones never eject", async (t) => {
    const flaky = await fakeReplica(t);
    const clock = handClock();
    const pool = new ReplicaPool([{ url: flaky.url, apiKey: null }], options({ probeTimer: clock.timer }));
    t.after(() => pool.close());
    pool.start();
    await pool.firstProbes();
    const from = flaky.seen.length;
    flaky.statusOf = (n) => ((n - from) % 3 === 0 ? 200 : 503); // two failures, then a pass, over and over
    for (let round = 0; round < 12; round++) {
      await clock.round();
      assert.equal(pool.replicas[0].state, "healthy", `after probe ${round + 1}`);
    }
    assert.equal(flaky.seen.length, from + 12);
    assert.equal(pool.replicas[0].counters.ejections, 0);
  });

  test("the probe GETs the health path with the replica's key, and no authorization without one", async (t) => {
    const keyed = await fakeReplica(t);
    const open = await fakeReplica(t, "");
    const pool = new ReplicaPool(
      [
        { url: keyed.url, apiKey: "sk-upstream-1" },
        { url: open.url, apiKey: null },
      ],
      options({ healthPath: "/health", probeTimer: handClock().timer }),
    );
    t.after(() => pool.close());
    pool.start();
    await pool.firstProbes();
    assert.equal(keyed.seen[0].authorization, "Bearer sk-upstream-1");
    assert.equal(open.seen[0].authorization, undefined);
    assert.deepEqual(
      [keyed.paths[0], open.paths[0]],
      ["/health", "/health"],
      "relative to the origin, not the base path",
    );
  });

  test("probes and requests reuse one kept-alive connection", async (t) => {
    const fake = await fakeReplica(t);
    const clock = handClock();
    const pool = new ReplicaPool([{ url: fake.url, apiKey: null }], options({ probeTimer: clock.timer }));
    t.after(() => pool.close());
    const r = pool.replicas[0];
    pool.start();
    await pool.firstProbes();
    for (let i = 0; i < 4; i++) await clock.round();
    const res = await r.dispatcher.request({ method: "GET", path: r.path("/models"), headers: r.headers() });
    assert.equal(res.statusCode, 200);
    assert.deepEqual(await res.body.json(), { object: "list", data: [] });
    assert.equal(fake.seen.length, 6);
    // Probes never overlap, so with this one request at most two were ever in flight at once.
    assert.ok(fake.connections <= 2, `${fake.connections} connections for ${fake.seen.length} requests`);
  });

  test("the wall clock schedules the next probe an interval after the last one ends", async (t) => {
    const fake = await fakeReplica(t);
    const pool = new ReplicaPool([{ url: fake.url, apiKey: null }], options({ healthIntervalMs: 10 }));
    t.after(() => pool.close());
    pool.start();
    await until("a second probe", () => fake.seen.length >= 2);
    assert.deepEqual(fake.paths.slice(0, 2), ["/v1/models", "/v1/models"]);
  });

  test("close() cancels the next probe and destroys in-flight requests", async (t) => {
    const fake = await fakeReplica(t);
    fake.hangPath = "/v1/chat/completions";
    const clock = handClock();
    const pool = new ReplicaPool([{ url: fake.url, apiKey: null }], options({ probeTimer: clock.timer }));
    const r = pool.replicas[0];
    pool.start();
    await pool.firstProbes();
    assert.equal(clock.pending, 1);
    const pending = r.dispatcher.request({
      method: "POST",
      path: r.path("/chat/completions"),
      headers: r.headers(),
      body: "{}",
    });
    const destroyed = assert.rejects(pending);
    await pool.close();
    await destroyed;
    assert.equal(clock.pending, 0, "the next probe is cancelled");
    await pool.firstProbes(); // already settled
    await pool.close(); // idempotent
  });

  test("a probe under way at close() schedules no next one", async (t) => {
    const fake = await fakeReplica(t);
    const clock = handClock();
    const pool = new ReplicaPool([{ url: fake.url, apiKey: null }], options({ probeTimer: clock.timer }));
    t.after(() => pool.close());
    pool.start();
    await pool.firstProbes();
    const round = clock.round(); // the probe goes out
    await pool.close();
    await round;
    assert.equal(clock.pending, 0);
  });
});

describe("attempts: the retry loop of completions and counts", () => {
  function leases(t: TestContext, n: number) {
    const { pool } = offlinePool(t, n);
    const released: string[] = [];
    const take = (tried: ReadonlySet<Replica>): Lease | null => {
      const replica = pool.pick(tried, false);
      return replica && { replica, release: () => released.push(replica.label) };
    };
    return { pool, released, take };
  }

  test("each attempt gets a replica not tried before, at most 1 + retries of them", async (t) => {
    const { released, take } = leases(t, 5);
    const seen: string[] = [];
    for await (const { replica } of attempts(2, take)) seen.push(replica.label);
    assert.equal(seen.length, 3);
    assert.equal(new Set(seen).size, 3, "no replica twice");
    assert.deepEqual(released, seen, "each released as the loop moved on");
  });

  test("the loop ends when no replica is left to try", async (t) => {
    const { take } = leases(t, 2);
    let n = 0;
    for await (const _ of attempts(5, take)) n++;
    assert.equal(n, 2);
  });

  test("a lease is released when the loop is left by return or by throw", async (t) => {
    const { released, take } = leases(t, 3);
    const first = async () => {
      for await (const { replica } of attempts(2, take)) return replica.label;
      return null;
    };
    const label = await first();
    assert.deepEqual(released, [label]);
    await assert.rejects(async () => {
      for await (const _ of attempts(2, take)) throw new Error("refused");
    }, /refused/);
    assert.equal(released.length, 2);
  });

  test("take is told which attempt it serves", async (t) => {
    const { take } = leases(t, 3);
    const ns: number[] = [];
    for await (const _ of attempts(2, (tried, n) => (ns.push(n), take(tried)))) {
      // every attempt fails
    }
    assert.deepEqual(ns, [0, 1, 2]);
  });
});
