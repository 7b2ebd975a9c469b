import type { Dispatcher } from "undici";
import type { ModelConfig, UpstreamConfig } from "../../config/schema.js";
import type { Logger } from "../../observability/log.js";
import type { PromptCounter } from "../../prompt/build.js";
import { ApiError, errors } from "../../server/errors.js";
import { SAMPLING_DEFAULTS, type Engine, type EngineEvent, type EngineStats, type EngineStatus, type ReplicaStats, type FinishReason, type GenerateOptions } from "../engine.js";
import { decodeCompletionBody, UpstreamStreamDecoder, type UpstreamEvent } from "./chat-stream.js";
import { COUNTING_DIALECTS, EndpointCounter, GgufCounter, type CountingDialect } from "./counter.js";
import { errorCode, failureOutcome, ReplicaPool, type Replica, type ReplicaOutcome } from "./replicas.js";

/** How long start-up waits for the first health probes before serving anyway (the probes go on). */
const FIRST_PROBES_WAIT_MS = 5_000;
const CONNECT_TIMEOUT_MS = 5_000;
/** How long the rest of a finished stream's body may take to arrive before its connection is dropped. */
const DRAIN_TIMEOUT_MS = 2_000;

/**
 * A failure before the completion's first text: another replica may be tried. `outcome` says what it tells
 * of the replica's health.
 */
class BeforeFirstText extends Error {
  constructor(
    message: string,
    readonly outcome: ReplicaOutcome,
    /** What the client gets when no replica is left to try. */
    readonly clientError: ApiError,
  ) {
    super(message);
  }
}

/** A replica's base URL as an OpenAI base URL: a bare origin means its API is under /v1, as every such server has it. */
export function openAiBase(url: string): string {
  const u = new URL(url);
  return u.pathname === "/" || u.pathname === "" ? `${url.replace(/\/+$/, "")}/v1` : url;
}

/**
 * A model served by other OpenAI-compatible servers (vLLM, SGLang, llama.cpp's server, Lucena One workers).
 * Each completion goes to the healthy replica with the fewest requests in flight: as a stream with usage for a
 * streaming client, whole for a JSON client. Failures before the first text are
 * retried on another replica; after it, the error ends the client's stream. The client's disconnect aborts the
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
  readonly encoder: PromptCounter;
  readonly pool: ReplicaPool;
  private readonly upstream: UpstreamConfig;
  private readonly upstreamModel: string;
  private readonly gguf: GgufCounter | null;

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
        log,
      },
    );
    const tokenizer = this.upstream.tokenizer;
    if (tokenizer === "auto" || (COUNTING_DIALECTS as readonly string[]).includes(tokenizer)) {
      this.gguf = null;
      this.encoder = new EndpointCounter(config.id, this.upstreamModel, this.pool, tokenizer as "auto" | CountingDialect, log, this.upstream.retries);
    } else {
      this.gguf = new GgufCounter(tokenizer);
      this.encoder = this.gguf;
    }
  }

  get modelId(): string {
    return this.config.id;
  }

  async load(): Promise<void> {
    try {
      await this.gguf?.load(this.log);
      this.pool.start();
      const waited = new Promise<void>((resolve) => setTimeout(resolve, FIRST_PROBES_WAIT_MS).unref());
      await Promise.race([this.pool.firstProbes(), waited]);
      this.state = "ready";
      const healthy = this.pool.replicas.filter((r) => r.state === "healthy").map((r) => r.label);
      this.log.info(
        { model: this.config.id, replicas: this.pool.replicas.map((r) => r.label), healthy, upstreamModel: this.upstreamModel },
        "upstream model ready",
      );
      if (healthy.length === 0) this.log.warn({ model: this.config.id }, "no upstream replica answers its health check yet");
    } catch (err) {
      this.state = "failed";
      this.log.error({ model: this.config.id, err: (err as Error).message }, "upstream model failed to start");
      throw err;
    }
  }

  /** `busy`: requests in flight to the replicas; `sequences`: the replicas that take requests now. */
  stats(): EngineStats {
    let busy = 0;
    let healthy = 0;
    for (const r of this.pool.replicas) {
      busy += r.outstanding;
      if (r.state === "healthy") healthy++;
    }
    return { busy, waiting: 0, sequences: healthy, promptTokensEvaluated: 0, promptTokensReused: 0 };
  }

  replicaStats(): ReplicaStats[] {
    return this.pool.replicas.map((r) => ({
      replica: r.label, healthy: r.state === "healthy", inFlight: r.outstanding, ...r.counters,
    }));
  }

  generate(opts: GenerateOptions): AsyncGenerator<EngineEvent, void, undefined> {
    // Admission: with no healthy replica the answer is an immediate 503, before any header goes out.
    if (!this.pool.anyHealthy) throw errors.modelUnavailable(this.config.id, 5);
    return this.run(opts);
  }

  private async *run(opts: GenerateOptions): AsyncGenerator<EngineEvent, void, undefined> {
    const tried = new Set<Replica>();
    let lastError: ApiError | null = null;
    for (let attempt = 0; attempt <= this.upstream.retries; attempt++) {
      const replica = this.pool.pick(tried);
      if (!replica) break;
      tried.add(replica);
      const release = this.pool.begin(replica);
      let texts = 0;
      const said: Said = {};
      try {
        for await (const ev of this.stream(replica, opts, said)) {
          if (ev.type === "text") texts++;
          yield ev;
        }
        return;
      } catch (err) {
        if (opts.signal.aborted) {
          // What was streamed is charged, one token per delta, as when a replica sends no usage. The prompt: what
          // the replica said it evaluated, none when nothing came back, else (absent) the whole prompt.
          const promptTokens = said.promptTokens ?? (texts === 0 ? 0 : undefined);
          yield { type: "done", finishReason: "cancelled", completionTokens: texts, ...(promptTokens !== undefined ? { promptTokens } : {}) };
          return;
        }
        // A request the replica refused (4xx): the client's error, not the replica's; already reported "ok".
        if (err instanceof ApiError && err.status < 500 && texts === 0) throw err;
        if (err instanceof BeforeFirstText && texts === 0) {
          this.pool.report(replica, err.outcome);
          this.log.warn({ model: this.config.id, replica: replica.label, attempt, err: err.message }, "upstream request failed before its first text");
          lastError = err.clientError;
          continue;
        }
        // After text went out: the failure ends the client's stream (the route writes the error event and [DONE]).
        this.pool.report(replica, "server");
        this.log.warn({ model: this.config.id, replica: replica.label, err: (err as Error).message }, "upstream stream failed mid-answer");
        throw err instanceof ApiError ? err : errors.upstreamFailed();
      } finally {
        release();
      }
    }
    throw lastError ?? errors.modelUnavailable(this.config.id, 5);
  }

  /** One attempt on one replica: the request, then its stream decoded into engine events. */
  private async *stream(replica: Replica, opts: GenerateOptions, said: Said): AsyncGenerator<EngineEvent, void, undefined> {
    const body: Record<string, unknown> = {
      model: this.upstreamModel,
      messages: opts.messages,
      // A JSON client's answer is fetched whole: one response to read instead of a chunk per token.
      stream: opts.incremental !== false,
      ...(opts.incremental !== false ? { stream_options: { include_usage: true } } : {}),
      max_tokens: opts.maxTokens,
      temperature: opts.temperature,
      top_p: opts.topP,
    };
    // Extensions every supported upstream takes; sent only when they differ from what the upstream does anyway.
    if (opts.topK !== SAMPLING_DEFAULTS.topK) body.top_k = opts.topK;
    if (opts.seed !== null) body.seed = opts.seed;
    if (opts.presencePenalty !== 0) body.presence_penalty = opts.presencePenalty;
    if (opts.frequencyPenalty !== 0) body.frequency_penalty = opts.frequencyPenalty;
    if (opts.stop.length > 0) body.stop = opts.stop;

    // The client's abort reaches the upstream request until the answer is complete; after that, the rest of
    // the body is read for the connection's sake whatever the client does.
    const abort = new AbortController();
    const onAbort = () => abort.abort(opts.signal.reason);
    if (opts.signal.aborted) abort.abort(opts.signal.reason);
    else opts.signal.addEventListener("abort", onAbort, { once: true });
    try {
      yield* this.exchange(replica, body, opts, abort.signal, said);
    } finally {
      opts.signal.removeEventListener("abort", onAbort);
    }
  }

  private async *exchange(
    replica: Replica,
    body: Record<string, unknown>,
    opts: GenerateOptions,
    signal: AbortSignal,
    said: Said,
  ): AsyncGenerator<EngineEvent, void, undefined> {
    let res: Dispatcher.ResponseData;
    try {
      res = await replica.dispatcher.request({
        method: "POST",
        path: replica.path("/chat/completions"),
        headers: body.stream ? { ...replica.headers(), accept: "text/event-stream" } : replica.headers(),
        body: JSON.stringify(body),
        signal,
        headersTimeout: this.upstream.first_byte_timeout_seconds * 1000,
        bodyTimeout: this.upstream.idle_timeout_seconds * 1000,
      });
    } catch (err) {
      if (opts.signal.aborted) throw err;
      throw new BeforeFirstText(`request: ${errorCode(err)}`, failureOutcome(err), errors.modelUnavailable(this.config.id, 5));
    }

    if (res.statusCode !== 200) {
      const text = (await res.body.text().catch(() => "")).slice(0, 300);
      throw this.refusal(replica, res.statusCode, text);
    }

    // Errors reach the loop below through its iterator; this listener covers a body destroyed after the loop.
    res.body.on("error", () => undefined);
    const decoder = new UpstreamStreamDecoder();
    let completionTokens = 0;
    let textEvents = 0;
    let promptTokens: number | undefined;
    let finish: FinishReason | null = null;
    let done = false;
    const handle = function* (events: UpstreamEvent[]): Generator<EngineEvent> {
      for (const ev of events) {
        if (ev.type === "text") {
          textEvents++;
          yield { type: "text", text: ev.text };
        } else if (ev.type === "finish") finish = ev.reason === "length" ? "length" : "stop";
        else if (ev.type === "usage") {
          promptTokens = ev.promptTokens;
          said.promptTokens = ev.promptTokens;
          completionTokens = ev.completionTokens;
        } else if (ev.type === "error") {
          throw new UpstreamStreamError(ev.message, ev.status);
        } else done = true;
      }
    };
    try {
      if (!body.stream) {
        const whole = await res.body.json();
        done = true; // read to its end: the connection is free again
        yield* handle(decodeCompletionBody(whole));
      } else {
        // Leaving the loop at [DONE] must not destroy the body: its connection is reused once the body is read.
        for await (const chunk of res.body.iterator({ destroyOnReturn: false })) {
          yield* handle(decoder.push(chunk as Buffer));
          if (done) break;
        }
        if (!done) yield* handle(decoder.end());
        else {
          // Read the rest of the body (servers end it right after [DONE]) so the connection goes back to the pool.
          res.body.dump({ limit: 1 << 20, signal: AbortSignal.timeout(DRAIN_TIMEOUT_MS) }).catch(() => undefined);
        }
      }
    } catch (err) {
      if (opts.signal.aborted) throw err;
      if (err instanceof UpstreamStreamError && err.status !== null && err.status < 500 && textEvents === 0) {
        // The replica refused the request in its stream (a prompt too long for it, say): so would any other.
        this.pool.report(replica, "ok");
        throw errors.upstreamRefused(err.status);
      }
      if (textEvents === 0) {
        throw new BeforeFirstText(`stream: ${errorCode(err)}`, "server", errors.modelUnavailable(this.config.id, 5));
      }
      throw err;
    } finally {
      // Any other way out (an error, the consumer stopping) releases the body; an abort destroys the socket.
      if (!done && !res.body.destroyed) res.body.destroy();
    }
    if (finish === null) {
      // The stream ended without saying how: a replica that died or a proxy that cut it. Never a silent end.
      if (textEvents === 0) throw new BeforeFirstText("stream ended before any answer", "server", errors.modelUnavailable(this.config.id, 5));
      throw errors.upstreamFailed();
    }
    this.pool.report(replica, "ok");
    if (promptTokens === undefined && opts.promptEstimated) {
      // The prompt was only bounded and the replica sent no usage: count it now, for the usage and the ledger.
      promptTokens = await this.encoder.count(opts.messages).catch(() => undefined);
    }
    // Without usage from the upstream, each content delta is counted as one token (servers send one per token).
    yield { type: "done", finishReason: finish, completionTokens: completionTokens || textEvents, ...(promptTokens !== undefined ? { promptTokens } : {}) };
  }

  /** A non-200 answer, before any text: what it says of the replica, and what the client would get. */
  private refusal(replica: Replica, status: number, text: string): Error {
    const unavailable = errors.modelUnavailable(this.config.id, 5);
    if (status >= 500 || status === 429 || status === 408) {
      // 429 and 503 say "busy" or "still loading" (with Retry-After): another replica is tried, and the replica
      // is not counted as failing. Other 5xx answers count toward its ejection.
      return new BeforeFirstText(`status ${status}`, status === 429 || status === 503 ? "ok" : "server", unavailable);
    }
    if (status === 401 || status === 403) {
      // The replica refused the gateway's key: an operator's configuration error, not the client's.
      this.log.error({ model: this.config.id, replica: replica.label, status }, "upstream replica refused its configured key");
      return new BeforeFirstText(`status ${status}`, "server", errors.internal());
    }
    // 400, 404, 413, 422…: the request itself was refused; another replica would say the same.
    this.pool.report(replica, "ok");
    this.log.warn({ model: this.config.id, replica: replica.label, status, detail: text }, "upstream refused the request");
    return errors.upstreamRefused(status);
  }

  async close(): Promise<void> {
    await this.pool.close();
    await this.gguf?.close();
  }
}

/** What a replica has told of the request so far, for a request cancelled before its end. */
interface Said {
  promptTokens?: number;
}

/** An error object inside an upstream's stream. */
class UpstreamStreamError extends Error {
  constructor(
    message: string,
    readonly status: number | null,
  ) {
    super(`upstream error${status ? ` ${status}` : ""}: ${message}`);
  }
}
