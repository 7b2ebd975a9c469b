import type { Dispatcher } from "undici";
import { wireTools } from "../../api/chat-request.js";
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
  readonly firstTextMs: number;
  readonly idleMs: number;

  constructor(
    upstream: UpstreamConfig,
    private readonly onSilence: () => void,
  ) {
    this.firstTextMs = upstream.first_token_timeout_seconds * 1000;
    this.idleMs = upstream.idle_timeout_seconds * 1000;
  }

  /** For undici's own body timer: a backstop above both bounds. */
  get backstopMs(): number {
    return Math.max(this.firstTextMs, this.idleMs) + 1000;
  }

  /** Starts the count from now: the first-text bound until the answer has text (`texted`), then the idle bound. */
  alive(texted: boolean): void {
    const ms = texted ? this.idleMs : this.firstTextMs;
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

/**
 * What a replica is asked: the conversation (the counter's prompt form), or a raw prompt (legacy completions),
 * and the sampling.
 */
export type MessagesOptions = GenerateOptions & { input: Extract<PromptInput, { kind: "messages" | "text" }> };

export const sendsMessages = (opts: GenerateOptions): opts is MessagesOptions =>
  opts.input.kind === "messages" || opts.input.kind === "text";

/** The chat completion (or, for a raw prompt, legacy completion) request a replica is sent. Always streamed. */
function requestBody(ctx: ExchangeContext, opts: MessagesOptions): Record<string, unknown> {
  const body: Record<string, unknown> = {
    model: ctx.upstreamModel,
    ...(opts.input.kind === "text" ? { prompt: opts.input.prompt } : { messages: opts.input.messages }),
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
  if (opts.logitBias !== null) body.logit_bias = Object.fromEntries(opts.logitBias);
  if (opts.logprobs !== null) {
    body.logprobs = true;
    if (opts.logprobs > 0) body.top_logprobs = opts.logprobs;
  }
  // OpenAI's response_format, which vLLM, SGLang and llama.cpp's server all take (llama.cpp's own json_schema
  // field goes as the same). A raw grammar is refused before this (UpstreamEngine.generate).
  const format = opts.format;
  if (opts.tools !== null) {
    body.tools = wireTools(opts.tools.tools);
    const choice = opts.tools.choice;
    body.tool_choice = typeof choice === "string" ? choice : { type: "function", function: { name: choice.name } };
    if (!opts.tools.parallel) body.parallel_tool_calls = false;
  }
  if (format?.kind === "json_object") body.response_format = { type: "json_object" };
  else if (format?.kind === "json_schema") {
    body.response_format = {
      type: "json_schema",
      json_schema: { name: format.name, schema: format.schema, strict: format.strict },
    };
  }
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

/** One attempt's abort: the client's (until the answer is complete) or the replica's ejection, whichever first. */
function attemptAbort(client: AbortSignal, abandon: AbortSignal) {
  const abort = new AbortController();
  const onClient = () => abort.abort(client.reason);
  const onAbandon = () => abort.abort(abandon.reason);
  if (client.aborted) onClient();
  else client.addEventListener("abort", onClient, { once: true });
  if (abandon.aborted) onAbandon();
  else abandon.addEventListener("abort", onAbandon, { once: true });
  return {
    controller: abort,
    dispose: () => {
      client.removeEventListener("abort", onClient);
      abandon.removeEventListener("abort", onAbandon);
    },
  };
}

/** What the answer said so far, as it is decoded into engine events. */
class DecodedAnswer {
  texts = 0;
  completionTokens = 0;
  promptTokens: number | undefined;
  finish: FinishReason | null = null;
  /** [DONE] came, or the whole body was read: the connection is free again. */
  done = false;

  constructor(private readonly said: Said) {}

  /** The upstream's events as engine events; an error object in the stream is thrown. */
  *events(events: UpstreamEvent[]): Generator<EngineEvent> {
    for (const ev of events) {
      if (ev.type === "text") {
        this.texts++;
        yield { type: "text", text: ev.text, ...(ev.logprobs ? { logprobs: ev.logprobs } : {}) };
      } else if (ev.type === "finish") {
        this.finish = ev.reason === "length" ? "length" : ev.reason === "tool_calls" ? "tool_calls" : "stop";
      } else if (ev.type === "tool_call") {
        // Handed on as it comes: like text, it is part of what the client has seen.
        this.texts++;
        yield {
          type: "tool_call",
          index: ev.index,
          ...(ev.name !== undefined ? { name: ev.name } : {}),
          ...(ev.arguments !== undefined ? { arguments: ev.arguments } : {}),
          tokens: 1,
        };
      } else if (ev.type === "usage") {
        this.promptTokens = ev.promptTokens;
        this.said.promptTokens = ev.promptTokens;
        this.completionTokens = ev.completionTokens;
      } else if (ev.type === "error") throw new UpstreamStreamError(ev.message, ev.status);
      else this.done = true;
    }
  }
}

/**
 * Sends the completion request (always streamed: see `exchange`); a replica that cannot be reached or answers
 * with anything but 200 is a BeforeFirstText (another replica may be tried) or a refusal.
 */
async function send(
  ctx: ExchangeContext,
  replica: Replica,
  opts: MessagesOptions,
  signal: AbortSignal,
  watch: SilenceWatch,
  cause: (err: unknown) => string,
  abandoned: () => boolean,
): Promise<Dispatcher.ResponseData> {
  let res: Dispatcher.ResponseData;
  try {
    res = await replica.dispatcher.request({
      method: "POST",
      path: replica.path(opts.input.kind === "text" ? "/completions" : "/chat/completions"),
      headers: { ...replica.headers(), accept: "text/event-stream" },
      body: JSON.stringify(requestBody(ctx, opts)),
      signal,
      headersTimeout: ctx.upstream.first_byte_timeout_seconds * 1000,
      // The silence watch bounds the body; undici's own timer stays as a backstop above both bounds.
      bodyTimeout: watch.backstopMs,
    });
  } catch (err) {
    if (opts.signal.aborted) throw err;
    throw new BeforeFirstText(
      `request: ${cause(err)}`,
      abandoned() ? "ok" : failureOutcome(err),
      errors.modelUnavailable(ctx.modelId, 5),
    );
  }
  if (res.statusCode !== 200) {
    const text = (await res.body.text().catch(() => "")).slice(0, 300);
    throw refusal(ctx, replica, res.statusCode, text);
  }
  // Errors reach the reader through its iterator; this listener covers a body destroyed after reading.
  res.body.on("error", () => undefined);
  return res;
}

/**
 * Reads the answer's body into engine events: a whole JSON completion (a server that answers a stream request
 * that way), or the SSE stream, under the silence watch (first-text bound, then the idle bound).
 */
async function* read(
  res: Dispatcher.ResponseData,
  answer: DecodedAnswer,
  watch: SilenceWatch,
): AsyncGenerator<EngineEvent, void, undefined> {
  if (/^application\/json/i.test(String(res.headers["content-type"] ?? ""))) {
    watch.alive(false);
    const whole = await res.body.json();
    answer.done = true; // read to its end: the connection is free again
    yield* answer.events(decodeCompletionBody(whole));
    return;
  }
  const decoder = new UpstreamStreamDecoder();
  watch.alive(false);
  // Leaving the loop at [DONE] must not destroy the body: its connection is reused once the body is read.
  for await (const chunk of res.body.iterator({ destroyOnReturn: false })) {
    // Only the replica's silence counts, not the time the client takes to read what was handed on.
    watch.stop();
    yield* answer.events(decoder.push(chunk as Buffer));
    if (answer.done) break;
    watch.alive(answer.texts > 0);
  }
  watch.stop();
  if (!answer.done) yield* answer.events(decoder.end());
  else {
    // Read the rest of the body (servers end it right after [DONE]) so the connection goes back to the pool.
    res.body.dump({ limit: 1 << 20, signal: AbortSignal.timeout(DRAIN_TIMEOUT_MS) }).catch(() => undefined);
  }
}

/** What a failure while reading the answer becomes: a refusal, a retryable failure before any text, or itself. */
function readFailure(
  ctx: ExchangeContext,
  replica: Replica,
  err: unknown,
  answer: DecodedAnswer,
  how: { cause: string; abandoned: boolean; silentMs: number | null },
): unknown {
  if (err instanceof UpstreamStreamError && err.status !== null && err.status < 500 && answer.texts === 0) {
    // The replica refused the request in its stream (a prompt too long for it, say): so would any other.
    ctx.pool.report(replica, "ok");
    return errors.upstreamRefused(err.status);
  }
  if (answer.texts === 0) {
    return new BeforeFirstText(
      `stream: ${how.cause}`,
      how.abandoned ? "ok" : "server",
      errors.modelUnavailable(ctx.modelId, 5),
    );
  }
  if (how.silentMs !== null) {
    ctx.log.warn(
      { model: ctx.modelId, replica: replica.label, silentMs: how.silentMs },
      "upstream stream silent too long: cut",
    );
  }
  return err;
}

/**
 * One attempt at a completion on one replica: the request (`send`), the answer read into engine events (`read`),
 * a failure classified (`readFailure`), and the final `done` with the usage. The client's abort reaches the upstream
 * request until the answer is complete; `abandon` (the replica's ejection) ends the attempt too. Whatever way it
 * ends, the body is released: read to its end when the answer finished, destroyed otherwise.
 */
export async function* exchange(
  ctx: ExchangeContext,
  replica: Replica,
  opts: MessagesOptions,
  abandon: AbortSignal,
  said: Said = {},
): AsyncGenerator<EngineEvent, void, undefined> {
  const abort = attemptAbort(opts.signal, abandon);
  const watch = new SilenceWatch(ctx.upstream, () => abort.controller.abort(new Error("silence")));
  /** Why this attempt failed when it was not the replica's doing nor the client's. */
  const cause = (err: unknown) =>
    abandon.aborted ? "replica ejected" : watch.fired ? "silent too long" : errorCode(err);
  const answer = new DecodedAnswer(said);
  let res: Dispatcher.ResponseData | null = null;
  try {
    res = await send(ctx, replica, opts, abort.controller.signal, watch, cause, () => abandon.aborted);
    try {
      yield* read(res, answer, watch);
    } catch (err) {
      if (opts.signal.aborted) throw err;
      throw readFailure(ctx, replica, err, answer, {
        cause: cause(err),
        abandoned: abandon.aborted,
        silentMs: watch.fired ? watch.idleMs : null,
      });
    }
    if (answer.finish === null) {
      // The stream ended without saying how: a replica that died or a proxy that cut it. Never a silent end.
      if (answer.texts === 0) {
        throw new BeforeFirstText("stream ended before any answer", "server", errors.modelUnavailable(ctx.modelId, 5));
      }
      throw errors.upstreamFailed();
    }
    ctx.pool.report(replica, "ok");
    let promptTokens = answer.promptTokens;
    if (promptTokens === undefined && opts.input.kind === "messages" && opts.input.estimated) {
      // The prompt was only bounded and the replica sent no usage: count it now, for the usage and the ledger.
      promptTokens = await ctx.encoder.count(opts.input.messages, opts.tools?.tools ?? null).catch(() => undefined);
    }
    // Without usage from the upstream, each content delta is counted as one token (servers send one per token).
    yield {
      type: "done",
      finishReason: answer.finish,
      completionTokens: answer.completionTokens || answer.texts,
      ...(promptTokens !== undefined ? { promptTokens } : {}),
    };
  } finally {
    watch.stop();
    abort.dispose();
    // Any other way out (an error, the consumer stopping) releases the body; an abort destroys the socket.
    if (res !== null && !answer.done && !res.body.destroyed) res.body.destroy();
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
