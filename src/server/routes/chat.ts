import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { checkUnsupported, ChatBodySchema, parseMessages, parseSampling, type ChatBody } from "../../api/chat-request.js";
import { ChunkWriter, completionId, completionObject, usage, type WireFinishReason } from "../../api/responses.js";
import { SAMPLING_DEFAULTS, type EngineEvent, type GenerateOptions } from "../../engines/engine.js";
import type { UsageJournal } from "../../keys/ledger.js";
import { preparePrompt } from "../../prompt/build.js";
import { Charge } from "../charge.js";
import { ApiError, errors } from "../errors.js";
import type { KeyWatch } from "../../keys/key-watch.js";
import type { RateLimiter } from "../../keys/limiter.js";
import type { ModelRegistry } from "../registry.js";
import { SseStream } from "../sse.js";

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
  error: ApiError;
}

/** What one completion did, for the request record (no text: never prompts or completions). */
export interface CompletionSummary {
  model: string;
  stream: boolean;
  promptTokens: number;
  completionTokens: number;
  /** stop, length, cancelled (client disconnected), error, shutdown, key_revoked, or null when generation never began. */
  finishReason: string | null;
  ttftMs: number | null;
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

/** decisions.md: `stream` true → SSE; false → JSON; omitted → JSON unless Accept names text/event-stream. */
function wantsStream(body: ChatBody, accept: string | undefined, alwaysStream: boolean): boolean {
  if (alwaysStream || body.stream === true) return true;
  if (body.stream === false) return false;
  return accept !== undefined && /text\/event-stream/i.test(accept);
}

export function chatRoute(app: FastifyInstance, opts: ChatRouteOptions): void {
  app.decorateRequest("completion", null);
  app.post<{ Body: ChatBody }>("/v1/chat/completions", { schema: { body: ChatBodySchema } }, async (req, reply) => {
    const body = req.body;
    checkUnsupported(body as Record<string, unknown>);
    const { config, engine } = opts.registry.ready(body.model, req.principal);
    const sampling = parseSampling(body);
    const stream = wantsStream(body, req.headers.accept, opts.alwaysStream);
    // Admission, cheapest first and all before any header: the key's request limits (429) before the prompt is
    // built, so a refused request costs no tokenization; then its tokens (429); then the engine's queue (503).
    const admission = opts.limiter.admit(req.principal!);
    reply.headers(admission.headers);
    let built: Awaited<ReturnType<typeof preparePrompt>>;
    try {
      built = await preparePrompt(config, engine.contextSize, engine.encoder, {
        messages: parseMessages(body.messages),
        shape: body.shape ?? null,
        maxTokens: sampling.maxTokens,
      }, false);
    } catch (err) {
      // The prompt was read and refused (a 400): the request counts against the key's rate, with no tokens.
      admission.settle(0);
      throw err;
    }
    if (reply.raw.destroyed || req.raw.socket.destroyed) {
      // The client went away while its prompt was being built: nothing reaches the model.
      admission.settle(0);
      reply.hijack();
      return reply;
    }
    admission.reserve(built.promptTokens + built.maxOutputTokens);
    reply.headers(admission.headers);
    let settle!: () => void;
    const outcome: CompletionOutcome = {
      model: config.id, stream, promptTokens: built.promptTokens, completionTokens: 0, finishReason: null, ttftMs: null,
      settled: new Promise<void>((resolve) => (settle = resolve)),
    };

    // The socket's close is the one source of cancellation; the controller is aborted in `finally` whatever
    // happened, which is what releases a sequence that was reserved but never used.
    const abort = new AbortController();
    let clientClosed = false;
    const onClose = () => {
      if (reply.raw.writableFinished) return;
      clientClosed = true;
      abort.abort(new Error("client disconnected"));
    };
    reply.raw.on("close", onClose);
    const onStop = () => abort.abort(new Error("server shutting down"));
    opts.stopping.addEventListener("abort", onStop, { once: true });
    // A generation the server ends (shutdown, the key revoked) tells its client why; one the client left, nothing.
    let revoked = false;
    const interrupted = (): Interruption | null => {
      if (reply.raw.destroyed) return null;
      if (revoked) return { finish: "key_revoked", error: errors.keyRevoked() };
      return opts.stopping.aborted ? { finish: "shutdown", error: errors.shuttingDown() } : null;
    };

    const genOpts: GenerateOptions = {
      incremental: stream,
      prompt: built.tokens,
      messages: built.messages,
      promptTokens: built.promptTokens,
      promptEstimated: built.estimated,
      maxTokens: built.maxOutputTokens,
      temperature: sampling.temperature ?? built.shape?.temperature ?? config.temperature,
      topP: sampling.topP ?? built.shape?.top_p ?? SAMPLING_DEFAULTS.topP,
      topK: sampling.topK ?? SAMPLING_DEFAULTS.topK,
      seed: sampling.seed,
      presencePenalty: sampling.presencePenalty,
      frequencyPenalty: sampling.frequencyPenalty,
      stop: sampling.stop,
      signal: abort.signal,
    };
    const started = performance.now();
    let events: AsyncGenerator<EngineEvent>;
    try {
      events = engine.generate(genOpts);
    } catch (err) {
      admission.cancel();
      reply.raw.off("close", onClose);
      opts.stopping.removeEventListener("abort", onStop);
      throw err;
    }
    req.completion = outcome; // from here on the request has reached the model: it is in the ledger
    const unwatch = opts.keyWatch.watch(req.principal!.keyId, () => {
      revoked = true;
      abort.abort(new Error("the key was revoked"));
    });
    const entry = opts.usage.open({ requestId: req.id, keyId: req.principal?.keyId ?? null, model: config.id, stream, maxCompletionTokens: built.maxOutputTokens });
    const charge = new Charge(outcome, entry, () => reply.elapsedTime);
    try {
      const id = completionId();
      const created = Math.floor(Date.now() / 1000);
      const run = { events, outcome, charge, started, clientClosed: () => clientClosed };
      if (stream) await streamCompletion(req, reply, opts.keepaliveMs, new ChunkWriter(id, created, config.id), run, body, interrupted);
      else await jsonCompletion(reply, id, created, run, interrupted);
    } catch (err) {
      // The error handler answers after this: the row is final before that answer is written.
      charge.end({ status: err instanceof ApiError ? err.status : 500, clientClosed });
      throw err;
    } finally {
      unwatch();
      reply.raw.off("close", onClose);
      opts.stopping.removeEventListener("abort", onStop);
      abort.abort();
      charge.end({ status: stream ? 200 : 500, clientClosed });
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
}

/**
 * Reads the engine's events into the outcome (time to first text, token counts, finish), handing each text to
 * `onText` (which tells the charge whether it goes to the client). Resolves with the finish reason for the wire,
 * or null when the generation was cancelled.
 */
async function consume(run: Run, onText: (text: string, tokens: number) => unknown): Promise<WireFinishReason | null> {
  const { outcome } = run;
  let finish: WireFinishReason | null = null;
  for await (const ev of run.events) {
    if (ev.type === "text") {
      if (outcome.ttftMs === null) outcome.ttftMs = performance.now() - run.started;
      await onText(ev.text, ev.tokens ?? 1);
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
  chunks: ChunkWriter,
  run: Run,
  body: ChatBody,
  interrupted: () => Interruption | null,
): Promise<void> {
  const { outcome, charge } = run;
  reply.hijack();
  const sse = new SseStream(reply.raw, keepaliveMs);
  sse.open(reply.getHeaders());
  try {
    await sse.send(chunks.role());
    const finish = await consume(run, (text, tokens) => {
      charge.text(tokens, sse.writable); // the ledger is ahead of the client before the text goes out
      return sse.send(chunks.content(text));
    });
    if (finish === null) {
      // Cancelled: either the client is gone (nothing more to say) or the server ended the generation.
      const why = interrupted();
      if (why) {
        outcome.finishReason = why.finish;
        charge.end({ status: 200, clientClosed: false });
        await sse.send(JSON.stringify(why.error.body()));
        await sse.send("[DONE]");
      }
      return;
    }
    charge.end({ status: 200, clientClosed: run.clientClosed() }); // final before the client sees its usage
    if (body.stream_options?.include_usage !== false) {
      await sse.send(chunks.usage(usage(outcome.promptTokens, outcome.completionTokens)));
    }
    await sse.send(chunks.finish(finish));
    await sse.send("[DONE]");
  } catch (err) {
    // Headers are out: the error goes in the stream, then [DONE]; never a silently truncated stream.
    const apiErr = err instanceof ApiError ? err : errors.internal();
    if (!(err instanceof ApiError)) req.log.error({ err }, "generation failed mid-stream");
    outcome.finishReason = "error";
    charge.end({ status: 200, clientClosed: run.clientClosed() });
    await sse.send(JSON.stringify(apiErr.body()));
    await sse.send("[DONE]");
  } finally {
    sse.close();
  }
}

async function jsonCompletion(
  reply: FastifyReply,
  id: string,
  created: number,
  run: Run,
  interrupted: () => Interruption | null,
): Promise<void> {
  const { outcome, charge } = run;
  let text = "";
  const finish = await consume(run, (t, tokens) => {
    charge.text(tokens, false); // delivered only with the whole answer
    text += t;
  });
  const why = finish === null ? interrupted() : null;
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
  reply.send(completionObject(id, created, outcome.model, text, finish, usage(outcome.promptTokens, outcome.completionTokens)));
}
