import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { checkUnsupported, ChatBodySchema, type ChatBody } from "../../api/chat-request.js";
import {
  ChunkWriter,
  completionId,
  completionObject,
  toolCallId,
  usage,
  type WireFinishReason,
  type WireToolCall,
} from "../../api/responses.js";
import type { EngineEvent } from "../../engines/engine.js";
import type { UsageJournal } from "../../keys/ledger.js";
import { resolveChat, type ResolvedChat } from "../../prompt/resolve.js";
import { Charge } from "../charge.js";
import type { CallPiece } from "../../engines/engine.js";
import { LucenaError, errors } from "../../core/errors.js";
import { httpError, httpStatus } from "../http-errors.js";
import type { CompletionSummary } from "../../core/request-record.js";
import type { KeyWatch } from "../../keys/key-watch.js";
import type { RateLimiter } from "../../keys/limiter.js";
import type { ModelRegistry } from "../registry.js";
import { streamSse } from "../sse.js";

export interface ChatRouteOptions {
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
interface Interruption {
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
function wantsStream(body: ChatBody, accept: string | undefined, alwaysStream: boolean): boolean {
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

export function chatRoute(app: FastifyInstance, opts: ChatRouteOptions): void {
  app.decorateRequest("completion", null);
  app.post<{ Body: ChatBody }>("/v1/chat/completions", { schema: { body: ChatBodySchema } }, async (req, reply) => {
    const body = req.body;
    checkUnsupported(body);
    const { config, engine } = opts.registry.ready(body.model, req.principal);
    const stream = wantsStream(body, req.headers.accept, opts.alwaysStream);
    // Admission, cheapest first and all before any header: the key's request limits (429) before the prompt is
    // built, so a refused request costs no tokenization; then its tokens (429); then the engine's queue (503).
    const admission = opts.limiter.admit(req.principal!);
    reply.headers(admission.headers);
    let resolved: ResolvedChat;
    try {
      resolved = await resolveChat(config, engine, body, "completion");
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
      return reply;
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
        id: completionId(),
        created: Math.floor(Date.now() / 1000),
      };
      if (stream)
        await streamCompletion(req, reply, opts.keepaliveMs, run, body.stream_options?.include_usage !== false);
      else await jsonCompletion(reply, run);
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
    return reply;
  });
}

/** One generation as the writers below read it. */
interface Run {
  events: AsyncGenerator<EngineEvent>;
  outcome: CompletionOutcome;
  charge: Charge;
  started: number;
  clientClosed: () => boolean;
  /** Why the server ended the generation, when it did (null: it ran to its end, or the client left). */
  interrupted: () => Interruption | null;
  /** The completion's id and creation time (seconds). */
  id: string;
  created: number;
}

/**
 * Reads the engine's events into the outcome (time to first text, token counts, finish), handing each text to
 * `onText` (which tells the charge whether it goes to the client). Resolves with the finish reason for the wire,
 * or null when the generation was cancelled.
 */
async function consume(
  run: Run,
  onText: (text: string, tokens: number) => unknown,
  onCall: (piece: CallPiece) => unknown,
): Promise<WireFinishReason | null> {
  const { outcome } = run;
  let finish: WireFinishReason | null = null;
  for await (const ev of run.events) {
    if (ev.type === "text") {
      if (outcome.ttftMs === null) outcome.ttftMs = performance.now() - run.started;
      await onText(ev.text, ev.tokens ?? 1);
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

async function streamCompletion(
  req: FastifyRequest,
  reply: FastifyReply,
  keepaliveMs: number,
  run: Run,
  includeUsage: boolean,
): Promise<void> {
  const { outcome, charge } = run;
  const chunks = new ChunkWriter(run.id, run.created, outcome.model);
  /** The calls whose first chunk went out. */
  const started = new Set<number>();
  reply.hijack();
  await streamSse(
    reply.raw,
    reply.getHeaders(),
    keepaliveMs,
    async (sse) => {
      await sse.send(chunks.role());
      const finish = await consume(
        run,
        (text, tokens) => {
          charge.text(tokens, sse.writable); // the ledger is ahead of the client before the text goes out
          return sse.send(chunks.content(text));
        },
        async (piece) => {
          charge.text(piece.tokens, sse.writable);
          // A call's first chunk gives its id, type and name; the next ones its arguments, as they come.
          if (!started.has(piece.index)) {
            started.add(piece.index);
            await sse.send(chunks.toolCallStart(piece.index, toolCallId(), piece.name ?? ""));
          }
          if (piece.arguments) await sse.send(chunks.toolCallArguments(piece.index, piece.arguments));
        },
      );
      if (finish === null) {
        // Cancelled: either the client is gone (nothing more to say) or the server ended the generation.
        const why = run.interrupted();
        if (why) {
          outcome.finishReason = why.finish;
          charge.end({ status: 200, clientClosed: false });
          await sse.fail(httpError(why.error).body);
        }
        return;
      }
      charge.end({ status: 200, clientClosed: run.clientClosed() }); // final before the client sees its usage
      if (includeUsage) await sse.send(chunks.usage(usage(outcome.promptTokens, outcome.completionTokens)));
      await sse.send(chunks.finish(finish));
      await sse.done();
    },
    (err) => {
      // Headers are out: the error goes in the stream, then [DONE]; never a silently truncated stream.
      if (!(err instanceof LucenaError)) req.log.error({ err }, "generation failed mid-stream");
      outcome.finishReason = "error";
      charge.end({ status: 200, clientClosed: run.clientClosed() });
      return httpError(err instanceof LucenaError ? err : errors.internal()).body;
    },
  );
}

async function jsonCompletion(reply: FastifyReply, run: Run): Promise<void> {
  const { outcome, charge } = run;
  let text = "";
  const calls: WireToolCall[] = [];
  const finish = await consume(
    run,
    (t, tokens) => {
      charge.text(tokens, false); // delivered only with the whole answer
      text += t;
    },
    (piece) => {
      charge.text(piece.tokens, false);
      const call = (calls[piece.index] ??= {
        id: toolCallId(),
        type: "function",
        function: { name: piece.name ?? "", arguments: "" },
      });
      call.function.arguments += piece.arguments ?? "";
    },
  );
  const why = finish === null ? run.interrupted() : null;
  if (why) {
    outcome.finishReason = why.finish;
    throw why.error;
  }
  if (finish === null) {
    reply.hijack(); // the client is gone
    reply.raw.destroy();
    return;
  }
  charge.end({ status: 200, clientClosed: run.clientClosed() }); // the row is final before the answer is written
  reply.send(
    completionObject(
      run.id,
      run.created,
      outcome.model,
      text,
      finish,
      usage(outcome.promptTokens, outcome.completionTokens),
      calls.filter((c) => c !== undefined), // a replica may skip an index
    ),
  );
}
