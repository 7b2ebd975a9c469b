import type { ModelConfig, UpstreamConfig } from "../../config/schema.js";
import type { Logger } from "../../observability/log.js";
import type { PromptCounter } from "../../prompt/build.js";
import { LucenaError, errors } from "../../core/errors.js";
import type {
  Embeddings,
  Engine,
  EngineEvent,
  EngineStats,
  EngineStatus,
  GenerateOptions,
  ReplicaStats,
} from "../engine.js";
import { sendsMessages, type MessagesOptions } from "./exchange.js";
import { AdmissionQueue, type Slot } from "./admission.js";
import { COUNTING_DIALECTS, EndpointCounter, type CountingDialect } from "./counter.js";
import { BeforeFirstText, exchange, type ExchangeContext, type Said } from "./exchange.js";
import { ReplicaPool, attempts, errorCode, failureOutcome, type Replica } from "./replicas.js";

/** How long start-up waits for the first health probes before serving anyway (the probes go on). */
const FIRST_PROBES_WAIT_MS = 5_000;
const CONNECT_TIMEOUT_MS = 5_000;

/**
 * One attempt of a request on one replica. Should the replica be ejected before any of the answer's text has
 * gone out, the attempt is abandoned (`abandon` aborts) and the request goes to another replica: the client has
 * seen nothing, and waiting on a replica judged broken (a frozen process holds its connections open) could
 * take minutes.
 */
class Attempt {
  constructor(
    /** 0 for the first attempt, then 1, 2… */
    readonly n = 0,
  ) {}
  texts = 0;
  /** What the replica said of the request (its prompt count), if anything, before it was cut. */
  readonly said: Said = {};
  private readonly abandoned = new AbortController();
  readonly abandon = this.abandoned.signal;
  readonly onEject = () => {
    if (this.texts === 0) this.abandoned.abort(new Error("replica ejected"));
  };
}

function promptCharged(a: Attempt): { promptTokens?: number } {
  const n = a.said.promptTokens ?? (a.texts === 0 ? 0 : undefined);
  return n === undefined ? {} : { promptTokens: n };
}

/** A replica's base URL as an OpenAI base URL: a bare origin means its API is under /v1, as every such server has it. */
export function openAiBase(url: string): string {
  const u = new URL(url);
  return u.pathname === "/" || u.pathname === "" ? `${url.replace(/\/+$/, "")}/v1` : url;
}

/**
 * A model served by other OpenAI-compatible servers (vLLM, SGLang, llama.cpp's server, Lucena One workers).
 * Each completion goes to the healthy replica with the fewest requests in flight, always as a stream with usage
 * (a JSON client's answer is gathered here: a replica that stops answering is told apart by its silence).
 * Failures before the first text are retried on another replica; after it, the error ends the client's stream. The client's disconnect aborts the
 * upstream request at once (its signal is the request's).
 */
export class UpstreamEngine implements Engine {
  private state: EngineStatus = "loading";

  /** Ready while at least one replica takes requests; `unavailable` while every one is ejected. */
  get status(): EngineStatus {
    if (this.state !== "ready") return this.state;
    return this.pool.anyHealthy ? "ready" : "unavailable";
  }
  readonly contextSize: number;
  /** The endpoint counter, or the GGUF counter once load() has made it. */
  private counter: (PromptCounter & { close?(): Promise<void> }) | null = null;
  readonly pool: ReplicaPool;
  private readonly admission: AdmissionQueue;
  private readonly upstream: UpstreamConfig;
  private readonly upstreamModel: string;
  /** `upstream.tokenizer` when it is a GGUF file: counted here, with node-llama-cpp, loaded only then. */
  private readonly ggufPath: string | null;

  constructor(
    private readonly config: ModelConfig,
    private readonly log: Logger,
  ) {
    if (!config.upstream) throw new Error(`model ${config.id} has no upstream`);
    this.upstream = config.upstream;
    this.contextSize = config.context_size;
    this.upstreamModel = this.upstream.model ?? config.id;
    this.pool = new ReplicaPool(
      this.upstream.replicas.map((r) => ({ url: openAiBase(r.url), apiKey: r.api_key })),
      {
        healthPath: this.upstream.health_path,
        healthIntervalMs: this.upstream.health_interval_seconds * 1000,
        healthTimeoutMs: Math.max(1000, this.upstream.health_interval_seconds * 1000),
        failuresToEject: this.upstream.failures_to_eject,
        probesToReadmit: this.upstream.probes_to_readmit,
        connectTimeoutMs: CONNECT_TIMEOUT_MS,
        maxInFlight: this.upstream.max_in_flight_per_replica,
        log,
      },
    );
    this.admission = new AdmissionQueue(this.pool, {
      modelId: config.id,
      perReplica: this.upstream.max_in_flight_per_replica,
      queueSize: config.queue_size,
    });
    const tokenizer = this.upstream.tokenizer;
    if (tokenizer === "auto" || (COUNTING_DIALECTS as readonly string[]).includes(tokenizer)) {
      this.ggufPath = null;
      this.counter = new EndpointCounter(
        config.id,
        this.upstreamModel,
        this.pool,
        tokenizer as "auto" | CountingDialect,
        log,
        this.upstream.retries,
      );
    } else {
      this.ggufPath = tokenizer;
    }
  }

  get encoder(): PromptCounter {
    if (!this.counter) throw new Error(`model ${this.config.id}: its GGUF counter is not loaded yet`); // a caller's bug
    return this.counter;
  }

  get modelId(): string {
    return this.config.id;
  }

  async load(): Promise<void> {
    try {
      if (this.ggufPath !== null) {
        const { GgufCounter } = await import("../llama/gguf-counter.js");
        const counter = new GgufCounter(this.ggufPath);
        await counter.load(this.log);
        this.counter = counter;
      }
      this.pool.start();
      const waited = new Promise<void>((resolve) => setTimeout(resolve, FIRST_PROBES_WAIT_MS).unref());
      await Promise.race([this.pool.firstProbes(), waited]);
      this.state = "ready";
      const healthy = this.pool.replicas.filter((r) => r.state === "healthy").map((r) => r.label);
      this.log.info(
        {
          model: this.config.id,
          replicas: this.pool.replicas.map((r) => r.label),
          healthy,
          upstreamModel: this.upstreamModel,
        },
        "upstream model ready",
      );
      if (healthy.length === 0)
        this.log.warn({ model: this.config.id }, "no upstream replica answers its health check yet");
    } catch (err) {
      this.state = "failed";
      this.log.error({ model: this.config.id, err: (err as Error).message }, "upstream model failed to start");
      throw err;
    }
  }

  /**
   * `busy`: completions in flight to the replicas; `waiting`: completions queued for a place on one (at most
   * the model's queue_size); `sequences`: the replicas that take requests now.
   */
  stats(): EngineStats {
    const healthy = this.pool.replicas.filter((r) => r.state === "healthy").length;
    return {
      busy: this.admission.inFlight,
      waiting: this.admission.waiting,
      sequences: healthy,
      promptTokensEvaluated: 0,
      promptTokensReused: 0,
    };
  }

  replicaStats(): ReplicaStats[] {
    return this.pool.replicas.map((r) => ({
      replica: r.label,
      healthy: r.state === "healthy",
      inFlight: r.outstanding,
      ...r.counters,
    }));
  }

  /**
   * Admission, synchronous and before any header goes out: with no healthy replica, a 503 (unavailable); with
   * every replica at max_in_flight_per_replica and queue_size requests already waiting, a 503 (queue full).
   */
  generate(opts: GenerateOptions): AsyncGenerator<EngineEvent, void, undefined> {
    if (!sendsMessages(opts)) throw new Error("an upstream model is sent the conversation or text, not tokens"); // a caller's bug
    if (opts.format?.kind === "grammar") {
      // Each server names its grammar field differently (llama.cpp `grammar`, vLLM `structured_outputs`); one
      // that does not know the field would ignore it.
      throw errors.invalidRequest(
        `The parameter 'grammar' is not supported for the upstream model '${this.config.id}'; use response_format.`,
        "grammar",
      );
    }
    if (opts.repeatPenalty !== null) {
      // llama.cpp's server counts a window (repeat_last_n), vLLM and SGLang the whole context, each under its
      // own field name: the same request would mean different things on different replicas.
      const field = opts.repeatPenalty.field;
      throw errors.invalidRequest(
        `The parameter '${field}' is not supported for the upstream model '${this.config.id}'.`,
        field,
      );
    }
    if (!this.pool.anyHealthy) throw errors.modelUnavailable(this.config.id, 5);
    const attempt = new Attempt();
    const slot = this.admission.enter(opts.signal, { onEject: attempt.onEject });
    return this.run(opts, attempt, slot);
  }

  private async *run(
    opts: MessagesOptions,
    first: Attempt,
    firstSlot: Slot,
  ): AsyncGenerator<EngineEvent, void, undefined> {
    const ctx: ExchangeContext = {
      modelId: this.config.id,
      upstreamModel: this.upstreamModel,
      upstream: this.upstream,
      pool: this.pool,
      encoder: this.encoder,
      log: this.log,
    };
    // The first attempt's place was taken in generate(); each retry waits ahead of new requests for a replica
    // not yet tried.
    const take = async (tried: ReadonlySet<Replica>, n: number) => {
      const attempt = n === 0 ? first : new Attempt(n);
      const slot =
        n === 0
          ? firstSlot
          : this.admission.enter(opts.signal, { exclude: tried, retry: true, onEject: attempt.onEject });
      const replica = await slot.ready;
      if (replica === null) {
        slot.release();
        return null;
      }
      return { replica, release: slot.release, attempt };
    };
    let lastError: LucenaError | null = null;
    for await (const { replica, attempt } of attempts(this.upstream.retries, take)) {
      try {
        for await (const ev of exchange(ctx, replica, opts, attempt.abandon, attempt.said)) {
          if (ev.type === "text" || ev.type === "tool_call") attempt.texts++;
          yield ev;
        }
        return;
      } catch (err) {
        if (opts.signal.aborted) {
          // What was streamed is charged, one token per delta, as when a replica sends no usage;
          // the prompt: what the replica said it evaluated, none when nothing came back, else (absent) the whole prompt.
          yield { type: "done", finishReason: "cancelled", completionTokens: attempt.texts, ...promptCharged(attempt) };
          return;
        }
        // A request the replica refused (4xx): the client's error, not the replica's; already reported "ok".
        if (err instanceof LucenaError && err.clientError && attempt.texts === 0) throw err;
        if (!(err instanceof BeforeFirstText) || attempt.texts > 0) {
          // After text went out: the failure ends the client's stream (the route writes the error event and [DONE]).
          this.pool.report(replica, "server");
          this.log.warn(
            { model: this.config.id, replica: replica.label, err: (err as Error).message },
            "upstream stream failed mid-answer",
          );
          throw err instanceof LucenaError ? err : errors.upstreamFailed();
        }
        this.pool.report(replica, err.outcome);
        this.log.warn(
          { model: this.config.id, replica: replica.label, attempt: attempt.n, err: err.message },
          "upstream request failed before its first text",
        );
        lastError = err.clientError;
      }
    }
    // The client left while waiting for a place: nothing was sent, nothing is charged.
    if (opts.signal.aborted) {
      yield { type: "done", finishReason: "cancelled", completionTokens: 0 };
      return;
    }
    throw lastError ?? errors.modelUnavailable(this.config.id, 5);
  }

  /**
   * An upstream embedding model (`kind: "embedding"`): the inputs go as they are to a replica's /v1/embeddings,
   * float vectors back; a replica that fails (not a 4xx) is tried no more and the next one is. The key's tokens
   * are held by a guess (a token per four bytes of text) until the replica's usage says.
   */
  async embed(
    inputs: readonly (string | readonly number[])[],
    signal: AbortSignal,
    admit: (tokens: number) => void,
    dimensions: number | null = null,
  ): Promise<Embeddings> {
    const guess = inputs.reduce<number>(
      (n, i) => n + (typeof i === "string" ? Math.ceil(Buffer.byteLength(i) / 4) + 1 : i.length),
      0,
    );
    if (!this.pool.anyHealthy) throw errors.modelUnavailable(this.config.id, 5);
    admit(guess);
    const take = (tried: ReadonlySet<Replica>) => {
      const replica = this.pool.pick(tried);
      return replica && { replica, release: this.pool.begin(replica) };
    };
    const body = JSON.stringify({
      model: this.upstreamModel,
      input: inputs,
      encoding_format: "float",
      ...(dimensions !== null ? { dimensions } : {}),
    });
    for await (const { replica } of attempts(this.upstream.retries, take)) {
      let status: number;
      let answer: unknown;
      try {
        const res = await replica.dispatcher.request({
          method: "POST",
          path: replica.path("/embeddings"),
          headers: { ...replica.headers(), "content-type": "application/json" },
          body,
          signal,
          headersTimeout: this.upstream.first_byte_timeout_seconds * 1000,
          bodyTimeout: this.upstream.idle_timeout_seconds * 1000,
        });
        status = res.statusCode;
        answer = await res.body.json().catch(() => null);
      } catch (err) {
        if (signal.aborted) throw err;
        this.pool.report(replica, failureOutcome(err));
        this.log.warn(
          { model: this.config.id, replica: replica.label, err: errorCode(err) },
          "upstream embeddings failed",
        );
        continue;
      }
      if (status >= 400 && status < 500 && ![401, 403, 408, 429].includes(status)) {
        // The request itself was refused (400, 404, 422…): another replica would say the same.
        this.pool.report(replica, "ok");
        this.log.warn(
          { model: this.config.id, replica: replica.label, status, detail: JSON.stringify(answer)?.slice(0, 300) },
          "upstream refused the request",
        );
        throw errors.upstreamRefused(status);
      }
      const vectors = status === 200 ? readEmbeddings(answer, inputs.length) : null;
      if (vectors === null) {
        // Busy (429, 408) is not a failure; a refused key (401, 403) and a 5xx count toward ejection.
        this.pool.report(replica, status === 429 || status === 408 || status === 503 ? "ok" : "server");
        this.log.warn({ model: this.config.id, replica: replica.label, status }, "upstream embeddings failed");
        continue;
      }
      this.pool.report(replica, "ok");
      const usage = (answer as { usage?: { prompt_tokens?: unknown } }).usage?.prompt_tokens;
      return { vectors, promptTokens: typeof usage === "number" ? usage : guess };
    }
    throw errors.modelUnavailable(this.config.id, 5);
  }

  async close(): Promise<void> {
    await this.pool.close();
    await this.counter?.close?.();
  }
}

/** A replica's embeddings answer: one float vector per input, by index; null when it is not that. */
function readEmbeddings(answer: unknown, count: number): Float32Array[] | null {
  const data = (answer as { data?: unknown } | null)?.data;
  if (!Array.isArray(data) || data.length !== count) return null;
  const out: Float32Array[] = new Array<Float32Array>(count);
  for (const [i, d] of data.entries()) {
    const item = d as { index?: unknown; embedding?: unknown } | null;
    const index = typeof item?.index === "number" ? item.index : i;
    if (!Array.isArray(item?.embedding) || index < 0 || index >= count) return null;
    out[index] = Float32Array.from(item.embedding as number[]);
  }
  return out.every((v) => v !== undefined) ? out : null;
}
