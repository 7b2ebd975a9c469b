import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { EngineStats, ReplicaStats } from "../engines/engine.js";
import type { RequestRecord } from "../core/request-record.js";

/** What the scrape-time gauges read: the served models (a ModelRegistry fits) and the open SSE streams. */
export interface MetricsSources {
  models: {
    readonly models: ReadonlyArray<{
      readonly config: { readonly id: string };
      readonly engine: { stats(): EngineStats; replicaStats?(): ReplicaStats[] };
    }>;
  };
  /** SSE responses open right now. */
  activeStreams: () => number;
}

const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
const TTFT_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/**
 * The Prometheus metrics of one server process, in their own registry. `observe` is the RequestObserver
 * (app.ts) that counts each finished request; the gauges are computed when scraped. Labels are route
 * patterns, statuses, configured model ids and finish reasons: never request text.
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly requests: Counter<"route" | "status">;
  private readonly duration: Histogram<"route">;
  private readonly ttft: Histogram<"model">;
  private readonly tokens: Counter<"model" | "kind">;
  private readonly completions: Counter<"model" | "finish_reason">;

  constructor(sources: MetricsSources) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.requests = new Counter({
      name: "lucena_http_requests_total",
      help: "HTTP requests answered, by route pattern and status.",
      labelNames: ["route", "status"],
      registers,
    });
    this.duration = new Histogram({
      name: "lucena_http_request_duration_seconds",
      help: "Time from request to the end of the response (a stream's whole length).",
      labelNames: ["route"],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.ttft = new Histogram({
      name: "lucena_time_to_first_token_seconds",
      help: "Time from a completion request to its first generated text.",
      labelNames: ["model"],
      buckets: TTFT_BUCKETS,
      registers,
    });
    this.tokens = new Counter({
      name: "lucena_tokens_total",
      help: "Tokens of completions that reached a model: prompt and completion.",
      labelNames: ["model", "kind"],
      registers,
    });
    this.completions = new Counter({
      name: "lucena_completions_total",
      help: "Completions that reached a model, by finish reason (none: generation never began).",
      labelNames: ["model", "finish_reason"],
      registers,
    });
    const perModel = (name: string, help: string, pick: (s: EngineStats) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ["model"],
        registers,
        collect() {
          for (const m of sources.models.models) this.set({ model: m.config.id }, pick(m.engine.stats()));
        },
      });
    perModel("lucena_queue_depth", "Requests waiting for a free sequence.", (s) => s.waiting);
    perModel("lucena_sequences_busy", "Sequences generating now.", (s) => s.busy);
    new Gauge({
      name: "lucena_engine_threads",
      help: "CPU threads an embedded model's decode steps use now (fewer while other processes use the cores).",
      labelNames: ["model"],
      registers,
      collect() {
        this.reset();
        for (const m of sources.models.models) {
          const threads = m.engine.stats().threads;
          if (threads !== undefined) this.set({ model: m.config.id }, threads);
        }
      },
    });
    // Upstream models: one series per replica, read from the replica pool when scraped.
    const perReplica = (name: string, help: string, pick: (r: ReplicaStats) => number, counter = false) => {
      const collect = function (this: Gauge<"model" | "replica"> | Counter<"model" | "replica">) {
        this.reset();
        for (const m of sources.models.models) {
          for (const r of m.engine.replicaStats?.() ?? []) {
            const labels = { model: m.config.id, replica: r.replica };
            if (this instanceof Gauge) this.set(labels, pick(r));
            else this.inc(labels, pick(r));
          }
        }
      };
      if (counter) new Counter({ name, help, labelNames: ["model", "replica"], registers, collect });
      else new Gauge({ name, help, labelNames: ["model", "replica"], registers, collect });
    };
    perReplica("lucena_upstream_replica_healthy", "1 while the replica takes requests, 0 while it is ejected.", (r) =>
      r.healthy ? 1 : 0,
    );
    perReplica("lucena_upstream_requests_in_flight", "Requests in flight to the replica.", (r) => r.inFlight);
    perReplica(
      "lucena_upstream_requests_total",
      "Requests sent to the replica (completions and counts).",
      (r) => r.requests,
      true,
    );
    perReplica(
      "lucena_upstream_failures_total",
      "Requests to the replica that failed (refused, 5xx, broken streams).",
      (r) => r.failures,
      true,
    );
    perReplica("lucena_upstream_ejections_total", "Times the replica was ejected.", (r) => r.ejections, true);
    new Gauge({
      name: "lucena_active_streams",
      help: "SSE completion streams open now.",
      registers,
      collect() {
        this.set(sources.activeStreams());
      },
    });
  }

  /** The RequestObserver: fast, never throws on a well-formed record. */
  readonly observe = (record: RequestRecord): void => {
    const route = record.route ?? "(unmatched)";
    this.requests.inc({ route, status: String(record.status) });
    this.duration.observe({ route }, record.durationMs / 1000);
    const c = record.completion;
    if (!c) return;
    this.tokens.inc({ model: c.model, kind: "prompt" }, c.promptTokens);
    this.tokens.inc({ model: c.model, kind: "completion" }, c.completionTokens);
    this.completions.inc({ model: c.model, finish_reason: c.finishReason ?? "none" });
    if (c.ttftMs !== null) this.ttft.observe({ model: c.model }, c.ttftMs / 1000);
  };

  /** The Prometheus text exposition of every metric, gauges computed now. */
  async scrape(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
