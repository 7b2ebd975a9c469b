import { Pool, type Dispatcher } from "undici";

export interface ReplicaConfig {
  /** Base URL as configured, e.g. "http://10.0.0.5:8000/v1" or "http://host:8080" (an OpenAI base URL; a trailing "/v1" is allowed and kept as the path prefix). */
  url: string;
  apiKey: string | null;
}

export interface ReplicaPoolOptions {
  /** Path probed by the active health check, relative to the origin, e.g. "/health" or "/v1/models". A 2xx answer is healthy. */
  healthPath: string;
  healthIntervalMs: number;
  /** Whole-probe deadline: connect, headers and body. */
  healthTimeoutMs: number;
  /** Consecutive request failures (5xx answers, timeouts) before passive ejection. A connection error ejects at once. */
  failuresToEject: number;
  /** Consecutive successful probes needed to re-admit an ejected replica. */
  probesToReadmit: number;
  connectTimeoutMs: number;
  /**
   * Completions sent to one replica at once (upstream.max_in_flight_per_replica). The connection pool holds a
   * few more, for prompt counts and probes beside them.
   */
  maxInFlight?: number;
  /** Schedules each next probe; the pool's only use of the clock. Tests pass one they advance by hand. */
  probeTimer?: ProbeTimer;
  log: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void };
}

export type ReplicaState = "healthy" | "ejected";

/**
 * Runs `probe` once, `ms` from now; the returned function cancels it if it has not run. The pool awaits nothing
 * the timer returns: it schedules the next probe from inside `probe`, after the previous one ends.
 */
export type ProbeTimer = (probe: () => Promise<void>, ms: number) => () => void;

/** The wall clock: a timer that does not keep the process alive. */
export const wallClockProbes: ProbeTimer = (probe, ms) => {
  const timer = setTimeout(() => void probe(), ms);
  timer.unref();
  return () => clearTimeout(timer);
};

/** Outcome of a request for passive health: see ReplicaPool.report. */
export type ReplicaOutcome = "ok" | "connect" | "server";

/** One OpenAI-compatible server with its own connection pool. */
export class Replica {
  /** The configured URL, minus any user:password, so it is safe in logs. */
  readonly url: string;
  /** Origin and base path without credentials: a metrics label. */
  readonly label: string;
  readonly apiKey: string | null;
  readonly dispatcher: Dispatcher;
  /**
   * Replicas start healthy: a configured replica gets traffic at once rather than waiting for its first probe,
   * and a replica that is in fact down is ejected by that probe or by the first request that cannot connect.
   */
  state: ReplicaState = "healthy";
  /** Requests in flight: completions and prompt counts. */
  outstanding = 0;
  /** Completions in flight, which upstream.max_in_flight_per_replica bounds. */
  completions = 0;
  readonly counters = { requests: 0, failures: 0, ejections: 0 };
  /** The base URL's path without trailing slashes: "/v1", or "" for a bare origin. */
  private readonly basePath: string;

  constructor(config: ReplicaConfig, connectTimeoutMs: number, maxInFlight = DEFAULT_MAX_IN_FLIGHT) {
    let u: URL;
    try {
      u = new URL(config.url);
    } catch {
      // The text itself is not echoed: it may hold credentials.
      throw new Error("upstream replica URL is not a valid URL");
    }
    const hadCredentials = u.username !== "" || u.password !== "";
    u.username = "";
    u.password = "";
    if (u.protocol !== "http:" && u.protocol !== "https:") {
      throw new Error(`upstream replica URL must be http or https: ${u.href}`);
    }
    this.url = hadCredentials ? u.href : config.url;
    this.basePath = u.pathname.replace(/\/+$/, "");
    this.label = u.origin + this.basePath;
    this.apiKey = config.apiKey;
    this.dispatcher = new Pool(u.origin, {
      // Completions hold a connection for a whole generation and are bounded by the engine's admission queue;
      // counts and probes take the few connections beyond. Never more: undici would queue the rest unbounded.
      connections: maxInFlight + SIDE_CONNECTIONS,
      // No pipelining: a request queued behind a long generation on the same socket would wait for all of it.
      pipelining: 1,
      // Idle sockets are reused, and closed before the server's own idle timeout (5 s for uvicorn, Node and
      // cpp-httplib) so that a request is not written to a socket the server is closing, which would read as a
      // connection error and eject a healthy replica. Keep-Alive hints from the server take precedence.
      keepAliveTimeout: 4_000,
      connect: { timeout: connectTimeoutMs },
      // headersTimeout/bodyTimeout stay at undici's defaults (300 s); every request passes its own.
    });
  }

  /** Full path for a path relative to the OpenAI base: with base "/v1", "/chat/completions" → "/v1/chat/completions". */
  path(apiPath: string): string {
    return this.basePath + leadingSlash(apiPath);
  }

  /** Path relative to the origin, ignoring the base path (for /health, /tokenize and other non-/v1 endpoints). */
  originPath(path: string): string {
    return leadingSlash(path);
  }

  headers(): Record<string, string> {
    const h: Record<string, string> = { "content-type": "application/json" };
    if (this.apiKey !== null) h.authorization = `Bearer ${this.apiKey}`;
    return h;
  }
}

/** vLLM's default max_num_seqs: completions one replica batches at once. */
export const DEFAULT_MAX_IN_FLIGHT = 256;
/** Connections per replica beyond its completions: prompt counts (short requests) and health probes. */
const SIDE_CONNECTIONS = 16;

function leadingSlash(p: string): string {
  return p.startsWith("/") ? p : `/${p}`;
}

/** Health bookkeeping the pool keeps for each replica. */
interface Health {
  /** Consecutive "server" outcomes while healthy. */
  failures: number;
  /** Consecutive successful probes while ejected. */
  probeSuccesses: number;
  /** Bumped on every ejection, so a probe that started before one does not count toward re-admission. */
  epoch: number;
  /** Cancels the next scheduled probe. */
  cancel: (() => void) | null;
  /** What each request in flight asked to be told of an ejection (see ReplicaPool.begin). */
  onEject: Set<() => void>;
}

/**
 * Error codes that mean no server answered at all: refused, reset, unreachable, unresolvable, or no connection
 * within the connect timeout.
 */
const UNREACHABLE = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_SOCKET",
]);

/** An error's code or name (ECONNREFUSED, UND_ERR_HEADERS_TIMEOUT, TimeoutError…): safe in logs, never headers or keys. */
export function errorCode(err: unknown): string {
  const e = err as { code?: unknown; name?: unknown } | null;
  return typeof e?.code === "string" ? e.code : typeof e?.name === "string" ? e.name : "error";
}

/**
 * What a failed exchange says of its replica, for probes, counts and completions alike: "connect" when no
 * server answered (ejected at once), otherwise "server" (a slow or broken answer, one of failuresToEject).
 */
export function failureOutcome(err: unknown): "connect" | "server" {
  return UNREACHABLE.has(errorCode(err)) ? "connect" : "server";
}

/** One replica held for one attempt of a request; `release` ends the hold (more calls do nothing). */
export interface Lease {
  readonly replica: Replica;
  readonly release: () => void;
}

/**
 * The attempts of one request, the retry loop of completions and prompt counts alike: at most 1 + `retries`
 * leases, each on a replica the request has not tried, taken by `take` (n counts from 0); it ends early when
 * `take` finds none. Each lease is released when the loop moves on or is left, by return, throw or break.
 */
export async function* attempts<L extends Lease>(
  retries: number,
  take: (tried: ReadonlySet<Replica>, n: number) => L | null | Promise<L | null>,
): AsyncGenerator<L, void, undefined> {
  const tried = new Set<Replica>();
  for (let n = 0; n <= retries; n++) {
    const lease = await take(tried, n);
    if (lease === null) return;
    tried.add(lease.replica);
    try {
      yield lease;
    } finally {
      lease.release();
    }
  }
}

export class ReplicaPool {
  readonly replicas: readonly Replica[];
  private readonly health = new Map<Replica, Health>();
  private readonly opts: ReplicaPoolOptions;
  /** Where the next tie-breaking scan starts, so equally loaded replicas take turns. */
  private cursor = 0;
  private started = false;
  private closed = false;
  private firstRound: Promise<void>;
  private firstRoundDone!: () => void;
  private readonly stateListeners: Array<(r: Replica) => void> = [];

  constructor(configs: ReplicaConfig[], opts: ReplicaPoolOptions) {
    if (configs.length === 0) throw new Error("an upstream model needs at least one replica");
    this.opts = {
      ...opts,
      failuresToEject: Math.max(1, opts.failuresToEject),
      probesToReadmit: Math.max(1, opts.probesToReadmit),
    };
    this.replicas = configs.map((c) => new Replica(c, opts.connectTimeoutMs, opts.maxInFlight));
    for (const r of this.replicas)
      this.health.set(r, { failures: 0, probeSuccesses: 0, epoch: 0, cancel: null, onEject: new Set() });
    this.firstRound = new Promise((resolve) => (this.firstRoundDone = resolve));
  }

  start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    let pending = this.replicas.length;
    for (const r of this.replicas) {
      void this.probeLoop(r, () => {
        if (--pending === 0) this.firstRoundDone();
      });
    }
  }

  /**
   * The healthy replica with the fewest requests in flight, among those not excluded and (`full`) not full.
   * `rotate: false` leaves the tie-breaking turn where it is: for side requests (prompt counts) that must not
   * steer which replica the next completion goes to.
   */
  pick(exclude?: ReadonlySet<Replica>, rotate = true, full?: (r: Replica) => boolean): Replica | null {
    const n = this.replicas.length;
    let best: Replica | null = null;
    let bestIndex = 0;
    for (let k = 0; k < n; k++) {
      const i = (this.cursor + k) % n;
      const r = this.replicas[i]!; // i < n, the length of the fixed list
      if (r.state !== "healthy" || exclude?.has(r) || full?.(r)) continue;
      if (best === null || r.outstanding < best.outstanding) {
        best = r;
        bestIndex = i;
      }
    }
    if (best !== null && rotate) this.cursor = (bestIndex + 1) % n;
    return best;
  }

  /**
   * Counts a request in flight on `r` until the returned release is called (more calls do nothing). `onEject`,
   * if given, is called should `r` be ejected meanwhile: a request that has sent nothing to its client yet can
   * then give up and go to another replica instead of waiting for one that no longer answers.
   */
  begin(r: Replica, onEject?: () => void): () => void {
    r.outstanding++;
    r.counters.requests++;
    const listeners = this.healthOf(r).onEject;
    if (onEject) listeners.add(onEject);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      r.outstanding--;
      if (onEject) listeners.delete(onEject);
    };
  }

  /** Calls `listener` after each ejection and re-admission. */
  onStateChange(listener: (r: Replica) => void): void {
    this.stateListeners.push(listener);
  }

  /**
   * Passive health. "ok" (including 4xx answers) clears the failure streak; "connect" ejects at once; "server"
   * ejects after failuresToEject in a row. Outcomes of requests still in flight on an ejected replica are counted
   * but change nothing: only probes re-admit.
   */
  report(r: Replica, kind: ReplicaOutcome): void {
    const h = this.healthOf(r);
    if (kind === "ok") {
      h.failures = 0;
      return;
    }
    r.counters.failures++;
    if (r.state !== "healthy") return;
    if (kind === "connect") {
      this.eject(r, "connection error");
    } else if (++h.failures >= this.opts.failuresToEject) {
      this.eject(r, `${h.failures} consecutive server errors`);
    }
  }

  get anyHealthy(): boolean {
    return this.replicas.some((r) => r.state === "healthy");
  }

  firstProbes(): Promise<void> {
    return this.firstRound;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const h of this.health.values()) {
      h.cancel?.();
      h.cancel = null;
    }
    this.firstRoundDone();
    await Promise.all(this.replicas.map((r) => r.dispatcher.destroy().catch(() => {})));
  }

  private healthOf(r: Replica): Health {
    const h = this.health.get(r);
    if (!h) throw new Error(`replica ${r.label} is not in this pool`);
    return h;
  }

  private eject(r: Replica, reason: string): void {
    const h = this.healthOf(r);
    r.state = "ejected";
    r.counters.ejections++;
    h.failures = 0;
    h.probeSuccesses = 0;
    h.epoch++;
    this.opts.log.warn({ replica: r.label, reason }, "replica ejected");
    for (const abandon of [...h.onEject]) abandon();
    for (const listener of this.stateListeners) listener(r);
  }

  /** Probes, then schedules the next probe an interval after this one ends, so probes never overlap. */
  private async probeLoop(r: Replica, onFirst?: () => void): Promise<void> {
    const h = this.healthOf(r);
    const epoch = h.epoch;
    const failure = await this.probe(r);
    if (this.closed) return;
    if (h.epoch === epoch) this.onProbe(r, h, failure);
    onFirst?.();
    h.cancel = (this.opts.probeTimer ?? wallClockProbes)(() => this.probeLoop(r), this.opts.healthIntervalMs);
  }

  private onProbe(r: Replica, h: Health, failure: string | null): void {
    if (r.state === "healthy") {
      if (failure === null) {
        h.failures = 0; // failures must come in a row to eject
        return;
      }
      // Nobody listening: down now. A slow or non-2xx answer (a busy or starting server) counts like a failed
      // request, toward failuresToEject.
      if (UNREACHABLE.has(failure)) this.eject(r, `health probe failed: ${failure}`);
      else if (++h.failures >= this.opts.failuresToEject) this.eject(r, `health probe failed: ${failure}`);
      return;
    }
    if (failure !== null) {
      h.probeSuccesses = 0;
    } else if (++h.probeSuccesses >= this.opts.probesToReadmit) {
      r.state = "healthy";
      h.failures = 0;
      h.probeSuccesses = 0;
      this.opts.log.info({ replica: r.label }, "replica re-admitted");
      for (const listener of this.stateListeners) listener(r);
    }
  }

  /** One GET of the health path: null when it answered 2xx, otherwise a short reason without secrets. */
  private async probe(r: Replica): Promise<string | null> {
    const timeout = this.opts.healthTimeoutMs;
    try {
      const { statusCode, body } = await r.dispatcher.request({
        method: "GET",
        path: r.originPath(this.opts.healthPath),
        headers: r.headers(),
        headersTimeout: timeout,
        bodyTimeout: timeout,
        signal: AbortSignal.timeout(timeout),
      });
      // Reading the body to its end lets the connection go back to the pool.
      await body.dump();
      return statusCode >= 200 && statusCode < 300 ? null : `HTTP ${statusCode}`;
    } catch (err) {
      return errorCode(err);
    }
  }
}
