import type { FastifyReply, FastifyRequest } from "fastify";
import type { ChatBody } from "../api/chat-request.js";
import type { CallPiece, EngineEvent, TokenLogprob } from "../engines/engine.js";
import type { WireFinishReason } from "../api/responses.js";
import type { UsageJournal } from "../keys/ledger.js";
import type { ResolvedChat } from "../prompt/resolve.js";
import { Charge } from "./charge.js";
import { LucenaError, errors } from "../core/errors.js";
import { httpStatus } from "./http-errors.js";
import type { CompletionSummary } from "../core/request-record.js";
import type { KeyWatch } from "../keys/key-watch.js";
import type { RateLimiter } from "../keys/limiter.js";
import type { ModelRegistry } from "./registry.js";

/**
 * One completion from request to ledger, for every route that generates (chat completions, the Responses API):
 * the model, the key's limits, the prompt, the engine, the ledger row and the cancellation are the same; only
 * how the answer is written differs (the route's writer).
 */

export interface CompletionRouteOptions {
  registry: ModelRegistry;
  limiter: RateLimiter;
  alwaysStream: boolean;
  keepaliveMs: number;
  /** Aborted when the server, shutting down, ends the generations still running. */
  stopping: AbortSignal;
  /** The usage ledger: a row from the moment a request reaches its model. */
  usage: UsageJournal;
  /** Ends a generation whose key is revoked or expires while it runs. */
  keyWatch: KeyWatch;
}

/** Why the server ended a generation: the ledger's finish reason and the error its client is sent. */
export interface Interruption {
  finish: "shutdown" | "key_revoked";
  error: LucenaError;
}

export interface CompletionOutcome extends CompletionSummary {
  /** Settles when the handler has finished with the engine (the outcome is final then). */
  settled: Promise<void>;
}

declare module "fastify" {
  interface FastifyRequest {
    completion: CompletionOutcome | null;
  }
}

/** docs/api.md, "Stream or JSON": `stream` true → SSE; false → JSON; omitted → JSON unless Accept names text/event-stream. */
export function wantsStream(
  body: Pick<ChatBody, "stream">,
  accept: string | undefined,
  alwaysStream: boolean,
): boolean {
  if (alwaysStream || body.stream === true) return true;
  if (body.stream === false) return false;
  return accept !== undefined && /text\/event-stream/i.test(accept);
}

/**
 * The request's cancellation: its signal aborts when the client's socket closes (the one source of a client's
 * cancellation) or the server, shutting down, ends generations; `dispose()` detaches both listeners and aborts,
 * which is what releases a sequence that was reserved but never used.
 */
function cancellation(reply: FastifyReply, stopping: AbortSignal) {
  const abort = new AbortController();
  let clientClosed = false;
  const onClose = () => {
    if (reply.raw.writableFinished) return;
    clientClosed = true;
    abort.abort(new Error("client disconnected"));
  };
  const onStop = () => abort.abort(new Error("server shutting down"));
  reply.raw.on("close", onClose);
  stopping.addEventListener("abort", onStop, { once: true });
  return {
    signal: abort.signal,
    abort: (reason: string) => abort.abort(new Error(reason)),
    clientClosed: () => clientClosed,
    dispose: () => {
      reply.raw.off("close", onClose);
      stopping.removeEventListener("abort", onStop);
      abort.abort();
    },
  };
}

/**
 * Serves one completion of `body` on `model`, already found ready for the key: admission (the key's limits, then
 * the prompt's tokens), the prompt, the engine, the ledger row, the key watch and the cancellation; `write`
 * writes the answer (SSE or JSON) from the run's events.
 */
export async function serveCompletion(
  req: FastifyRequest,
  reply: FastifyReply,
  opts: CompletionRouteOptions,
  model: ReturnType<ModelRegistry["ready"]>,
  /** The prompt and sampling of the request (chat: resolveChat): a 400 here counts against the key's rate. */
  resolve: () => Promise<ResolvedChat>,
  stream: boolean,
  write: (run: Run) => Promise<void>,
): Promise<void> {
  const { config, engine } = model;
  // Admission, cheapest first and all before any header: the key's request limits (429) before the prompt is
  // built, so a refused request costs no tokenization; then its tokens (429); then the engine's queue (503).
  const admission = opts.limiter.admit(req.principal!);
  reply.headers(admission.headers);
  let resolved: ResolvedChat;
  try {
    resolved = await resolve();
  } catch (err) {
    // The prompt was read and refused (a 400): the request counts against the key's rate, with no tokens.
    admission.settle(0);
    throw err;
  }
  const { prompt, sampling } = resolved;
  if (reply.raw.destroyed || req.raw.socket.destroyed) {
    // The client went away while its prompt was being built: nothing reaches the model.
    admission.settle(0);
    reply.hijack();
    return;
  }
  admission.reserve(prompt.promptTokens + prompt.maxOutputTokens);
  reply.headers(admission.headers);
  let settle!: () => void;
  const outcome: CompletionOutcome = {
    model: config.id,
    stream,
    promptTokens: prompt.promptTokens,
    completionTokens: 0,
    finishReason: null,
    ttftMs: null,
    settled: new Promise<void>((resolve) => (settle = resolve)),
  };

  const cancel = cancellation(reply, opts.stopping);
  // A generation the server ends (shutdown, the key revoked) tells its client why; one the client left, nothing.
  let revoked = false;
  const interrupted = (): Interruption | null => {
    if (reply.raw.destroyed) return null;
    if (revoked) return { finish: "key_revoked", error: errors.keyRevoked() };
    return opts.stopping.aborted ? { finish: "shutdown", error: errors.shuttingDown() } : null;
  };

  const started = performance.now();
  let events: AsyncGenerator<EngineEvent>;
  try {
    events = engine.generate({ ...sampling, input: prompt.input, signal: cancel.signal });
  } catch (err) {
    admission.cancel();
    cancel.dispose();
    throw err;
  }
  req.completion = outcome; // from here on the request has reached the model: it is in the ledger
  const unwatch = opts.keyWatch.watch(req.principal!.keyId, () => {
    revoked = true;
    cancel.abort("the key was revoked");
  });
  const entry = opts.usage.open({
    requestId: req.id,
    keyId: req.principal?.keyId ?? null,
    model: config.id,
    stream,
    maxCompletionTokens: prompt.maxOutputTokens,
  });
  const charge = new Charge(outcome, entry, () => reply.elapsedTime);
  try {
    const run: Run = {
      events,
      outcome,
      charge,
      started,
      clientClosed: cancel.clientClosed,
      interrupted,
      created: Math.floor(Date.now() / 1000),
      logprobs: sampling.logprobs !== null,
    };
    await write(run);
  } catch (err) {
    // The error handler answers after this: the row is final before that answer is written.
    charge.end({ status: err instanceof LucenaError ? httpStatus(err) : 500, clientClosed: cancel.clientClosed() });
    throw err;
  } finally {
    unwatch();
    cancel.dispose();
    charge.end({ status: stream ? 200 : 500, clientClosed: cancel.clientClosed() });
    admission.settle(outcome.promptTokens + outcome.completionTokens);
    settle();
  }
}

/** One generation as a route's writer reads it. */
export interface Run {
  events: AsyncGenerator<EngineEvent>;
  outcome: CompletionOutcome;
  charge: Charge;
  started: number;
  clientClosed: () => boolean;
  /** Why the server ended the generation, when it did (null: it ran to its end, or the client left). */
  interrupted: () => Interruption | null;
  /** The creation time (seconds). */
  created: number;
  /** The request asked for its tokens' log-probabilities. */
  logprobs: boolean;
}

/**
 * Reads the engine's events into the outcome (time to first text, token counts, finish), handing each text to
 * `onText` (which tells the charge whether it goes to the client). Resolves with the finish reason for the wire,
 * or null when the generation was cancelled.
 */
export async function consume(
  run: Run,
  onText: (text: string, tokens: number, logprobs: TokenLogprob[] | undefined) => unknown,
  onCall: (piece: CallPiece) => unknown,
): Promise<WireFinishReason | null> {
  const { outcome } = run;
  let finish: WireFinishReason | null = null;
  for await (const ev of run.events) {
    if (ev.type === "text") {
      if (outcome.ttftMs === null) outcome.ttftMs = performance.now() - run.started;
      await onText(ev.text, ev.tokens ?? 1, ev.logprobs);
      continue;
    }
    if (ev.type === "tool_call") {
      if (outcome.ttftMs === null) outcome.ttftMs = performance.now() - run.started;
      await onCall(ev);
      continue;
    }
    if (ev.promptTokens !== undefined) outcome.promptTokens = ev.promptTokens;
    outcome.completionTokens = ev.completionTokens;
    outcome.finishReason = ev.finishReason;
    run.charge.done(ev);
    if (ev.finishReason !== "cancelled") finish = ev.finishReason;
  }
  return finish;
}

/**
 * How a whole (JSON) answer ends, after `consume`: the finish reason to answer with, the ledger row final; or
 * null when the client is gone (its reply is dropped). A generation the server ended throws its error, which the
 * error handler answers.
 */
export function endWhole(reply: FastifyReply, run: Run, finish: WireFinishReason | null): WireFinishReason | null {
  const why = finish === null ? run.interrupted() : null;
  if (why) {
    run.outcome.finishReason = why.finish;
    throw why.error;
  }
  if (finish === null) {
    reply.hijack(); // the client is gone
    reply.raw.destroy();
    return null;
  }
  run.charge.end({ status: 200, clientClosed: run.clientClosed() }); // the row is final before the answer is written
  return finish;
}

/**
 * How a stream ends, after `consume`: the finish reason for the last frames, the ledger row final before the
 * client sees its usage; or null when there is no more to send: the client is gone, or the server ended the
 * generation, which `fail` tells the client in the route's own frames.
 */
export async function endStream(
  run: Run,
  finish: WireFinishReason | null,
  fail: (err: LucenaError) => Promise<void>,
): Promise<WireFinishReason | null> {
  if (finish === null) {
    const why = run.interrupted();
    if (why) {
      run.outcome.finishReason = why.finish;
      run.charge.end({ status: 200, clientClosed: false });
      await fail(why.error);
    }
    return null;
  }
  run.charge.end({ status: 200, clientClosed: run.clientClosed() });
  return finish;
}

/**
 * A stream that failed after its headers: logged unless it is one of ours, its row made final; the error the
 * client is told in the stream.
 */
export function streamFailure(req: FastifyRequest, run: Run, err: unknown): LucenaError {
  if (!(err instanceof LucenaError)) req.log.error({ err }, "generation failed mid-stream");
  run.outcome.finishReason = "error";
  run.charge.end({ status: 200, clientClosed: run.clientClosed() });
  return err instanceof LucenaError ? err : errors.internal();
}
