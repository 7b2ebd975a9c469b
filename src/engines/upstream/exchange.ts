import type { Dispatcher } from "undici";
import type { UpstreamConfig } from "../../config/schema.js";
import type { Logger } from "../../observability/log.js";
import type { PromptCounter, PromptInput } from "../../prompt/build.js";
import { LucenaError, errors } from "../../core/errors.js";
import { SAMPLING_DEFAULTS, type EngineEvent, type FinishReason, type GenerateOptions } from "../engine.js";
import { decodeCompletionBody, UpstreamStreamDecoder, type UpstreamEvent } from "./chat-stream.js";
import { errorCode, failureOutcome, type Replica, type ReplicaOutcome, type ReplicaPool } from "./replicas.js";

/** How long the rest of a finished stream's body may take to arrive before its connection is dropped. */
const DRAIN_TIMEOUT_MS = 2_000;

/**
 * A failure before the completion's first text: another replica may be tried. `outcome` says what it tells
 * of the replica's health.
 */
export class BeforeFirstText extends Error {
  constructor(
    message: string,
    readonly outcome: ReplicaOutcome,
    /** What the client gets when no replica is left to try. */
    readonly clientError: LucenaError,
  ) {
    super(message);
  }
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

/** What one exchange needs of its model. */
export interface ExchangeContext {
  modelId: string;
  upstreamModel: string;
  upstream: UpstreamConfig;
  pool: ReplicaPool;
  encoder: PromptCounter;
  log: Logger;
}

/**
 * Aborts an attempt whose replica has been silent too long: `firstText` until the answer's first text (the
 * replica may be queueing the request or evaluating a long prompt; a Lucena worker writes keepalive comments
 * meanwhile, other servers write nothing), `idle` after it (tokens come every few milliseconds). Every byte,
 * keepalive comments included, is a sign of life; the count runs only while the next bytes are awaited.
 */
class SilenceWatch {
  private timer: NodeJS.Timeout | null = null;
  fired = false;

  constructor(private readonly onSilence: () => void) {}

  /** Starts the count from now, with the bound for the answer's current stage. */
  alive(ms: number): void {
    this.stop();
    this.timer = setTimeout(() => {
      this.fired = true;
      this.onSilence();
    }, ms);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
}

/** What a replica is asked: the conversation (the counter's prompt form) and the sampling. */
export type MessagesOptions = GenerateOptions & { input: Extract<PromptInput, { kind: "messages" }> };

export const sendsMessages = (opts: GenerateOptions): opts is MessagesOptions => opts.input.kind === "messages";

/** The chat completion request a replica is sent. Always streamed: see `exchange`. */
function requestBody(ctx: ExchangeContext, opts: MessagesOptions): Record<string, unknown> {
  const body: Record<string, unknown> = {
    model: ctx.upstreamModel,
    messages: opts.input.messages,
    stream: true,
    stream_options: { include_usage: true },
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
  if (opts.minP !== null) body.min_p = opts.minP;
  if (opts.ignoreEos) body.ignore_eos = true;
  return body;
}

/**
 * One attempt on one replica: the request, then its stream decoded into engine events. The answer is requested
 * as a stream whatever the client asked for: its headers and bytes then come at once and keep coming, so that
 * a replica that stops answering is told from one that is still generating, which a whole JSON answer (its
 * headers after the last token) would not allow. `abandon` aborts the attempt (its replica was ejected).
 */
/** What a replica has told of the request so far: its prompt count, for a request cancelled before its end. */
export interface Said {
  promptTokens?: number;
}

export async function* exchange(
  ctx: ExchangeContext,
  replica: Replica,
  opts: MessagesOptions,
  abandon: AbortSignal,
  said: Said = {},
): AsyncGenerator<EngineEvent, void, undefined> {
  const unavailable = () => errors.modelUnavailable(ctx.modelId, 5);
  // The client's abort reaches the upstream request until the answer is complete; after that, the rest of
  // the body is read for the connection's sake whatever the client does.
  const abort = new AbortController();
  const onAbort = () => abort.abort(opts.signal.reason);
  const onAbandon = () => abort.abort(abandon.reason);
  if (opts.signal.aborted) onAbort();
  else opts.signal.addEventListener("abort", onAbort, { once: true });
  if (abandon.aborted) onAbandon();
  else abandon.addEventListener("abort", onAbandon, { once: true });
  const watch = new SilenceWatch(() => abort.abort(new Error("silence")));
  const firstTextMs = ctx.upstream.first_token_timeout_seconds * 1000;
  const idleMs = ctx.upstream.idle_timeout_seconds * 1000;
  /** Why this attempt failed when it was not the replica's doing nor the client's. */
  const cause = (err: unknown) =>
    abandon.aborted ? "replica ejected" : watch.fired ? "silent too long" : errorCode(err);

  let res: Dispatcher.ResponseData | null = null;
  let done = false;
  try {
    try {
      res = await replica.dispatcher.request({
        method: "POST",
        path: replica.path("/chat/completions"),
        headers: { ...replica.headers(), accept: "text/event-stream" },
        body: JSON.stringify(requestBody(ctx, opts)),
        signal: abort.signal,
        headersTimeout: ctx.upstream.first_byte_timeout_seconds * 1000,
        // The silence watch bounds the body; undici's own timer stays as a backstop above both bounds.
        bodyTimeout: Math.max(firstTextMs, idleMs) + 1000,
      });
    } catch (err) {
      if (opts.signal.aborted) throw err;
      throw new BeforeFirstText(`request: ${cause(err)}`, abandon.aborted ? "ok" : failureOutcome(err), unavailable());
    }
    if (res.statusCode !== 200) {
      const text = (await res.body.text().catch(() => "")).slice(0, 300);
      throw refusal(ctx, replica, res.statusCode, text);
    }
    // Errors reach the loop below through its iterator; this listener covers a body destroyed after the loop.
    res.body.on("error", () => undefined);
    const decoded = {
      texts: 0,
      completionTokens: 0,
      promptTokens: undefined as number | undefined,
      finish: null as FinishReason | null,
    };
    const handle = function* (events: UpstreamEvent[]): Generator<EngineEvent> {
      for (const ev of events) {
        if (ev.type === "text") {
          decoded.texts++;
          yield { type: "text", text: ev.text };
        } else if (ev.type === "finish") decoded.finish = ev.reason === "length" ? "length" : "stop";
        else if (ev.type === "usage") {
          decoded.promptTokens = ev.promptTokens;
          said.promptTokens = ev.promptTokens;
          decoded.completionTokens = ev.completionTokens;
        } else if (ev.type === "error") throw new UpstreamStreamError(ev.message, ev.status);
        else done = true;
      }
    };
    try {
      if (/^application\/json/i.test(String(res.headers["content-type"] ?? ""))) {
        // A server that answers a stream request with a whole completion: read it whole.
        watch.alive(firstTextMs);
        const whole = await res.body.json();
        done = true; // read to its end: the connection is free again
        yield* handle(decodeCompletionBody(whole));
      } else {
        const decoder = new UpstreamStreamDecoder();
        watch.alive(firstTextMs);
        // Leaving the loop at [DONE] must not destroy the body: its connection is reused once the body is read.
        for await (const chunk of res.body.iterator({ destroyOnReturn: false })) {
          // Only the replica's silence counts, not the time the client takes to read what was handed on.
          watch.stop();
          yield* handle(decoder.push(chunk as Buffer));
          if (done) break;
          watch.alive(decoded.texts > 0 ? idleMs : firstTextMs);
        }
        watch.stop();
        if (!done) yield* handle(decoder.end());
        else {
          // Read the rest of the body (servers end it right after [DONE]) so the connection goes back to the pool.
          res.body.dump({ limit: 1 << 20, signal: AbortSignal.timeout(DRAIN_TIMEOUT_MS) }).catch(() => undefined);
        }
      }
    } catch (err) {
      if (opts.signal.aborted) throw err;
      if (err instanceof UpstreamStreamError && err.status !== null && err.status < 500 && decoded.texts === 0) {
        // The replica refused the request in its stream (a prompt too long for it, say): so would any other.
        ctx.pool.report(replica, "ok");
        throw errors.upstreamRefused(err.status);
      }
      if (decoded.texts === 0)
        throw new BeforeFirstText(`stream: ${cause(err)}`, abandon.aborted ? "ok" : "server", unavailable());
      if (watch.fired) {
        ctx.log.warn(
          { model: ctx.modelId, replica: replica.label, silentMs: idleMs },
          "upstream stream silent too long: cut",
        );
      }
      throw err;
    }
    if (decoded.finish === null) {
      // The stream ended without saying how: a replica that died or a proxy that cut it. Never a silent end.
      if (decoded.texts === 0) throw new BeforeFirstText("stream ended before any answer", "server", unavailable());
      throw errors.upstreamFailed();
    }
    ctx.pool.report(replica, "ok");
    let promptTokens = decoded.promptTokens;
    if (promptTokens === undefined && opts.input.estimated) {
      // The prompt was only bounded and the replica sent no usage: count it now, for the usage and the ledger.
      promptTokens = await ctx.encoder.count(opts.input.messages).catch(() => undefined);
    }
    // Without usage from the upstream, each content delta is counted as one token (servers send one per token).
    yield {
      type: "done",
      finishReason: decoded.finish,
      completionTokens: decoded.completionTokens || decoded.texts,
      ...(promptTokens !== undefined ? { promptTokens } : {}),
    };
  } finally {
    watch.stop();
    opts.signal.removeEventListener("abort", onAbort);
    abandon.removeEventListener("abort", onAbandon);
    // Any other way out (an error, the consumer stopping) releases the body; an abort destroys the socket.
    if (res !== null && !done && !res.body.destroyed) res.body.destroy();
  }
}

/** A non-200 answer, before any text: what it says of the replica, and what the client would get. */
function refusal(ctx: ExchangeContext, replica: Replica, status: number, text: string): Error {
  const unavailable = errors.modelUnavailable(ctx.modelId, 5);
  if (status >= 500 || status === 429 || status === 408) {
    // 429 and 503 say "busy" or "still loading" (with Retry-After): another replica is tried, and the replica
    // is not counted as failing. Other 5xx answers count toward its ejection.
    return new BeforeFirstText(`status ${status}`, status === 429 || status === 503 ? "ok" : "server", unavailable);
  }
  if (status === 401 || status === 403) {
    // The replica refused the gateway's key: an operator's configuration error, not the client's.
    ctx.log.error(
      { model: ctx.modelId, replica: replica.label, status },
      "upstream replica refused its configured key",
    );
    return new BeforeFirstText(`status ${status}`, "server", errors.internal());
  }
  // 400, 404, 413, 422…: the request itself was refused; another replica would say the same.
  ctx.pool.report(replica, "ok");
  ctx.log.warn({ model: ctx.modelId, replica: replica.label, status, detail: text }, "upstream refused the request");
  return errors.upstreamRefused(status);
}
