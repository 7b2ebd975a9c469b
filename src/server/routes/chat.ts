import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { checkUnsupported, ChatBodySchema, parseMessages, parseSampling, type ChatBody } from "../../api/chat-request.js";
import { ChunkWriter, completionId, completionObject, usage, type WireFinishReason } from "../../api/responses.js";
import { SAMPLING_DEFAULTS, type EngineEvent, type GenerateOptions } from "../../engines/engine.js";
import type { UsageJournal } from "../../keys/ledger.js";
import { preparePrompt } from "../../prompt/build.js";
import { Charge } from "../charge.js";
import { ApiError, errors } from "../errors.js";
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
}

/** What one completion did, for the request record (no text: never prompts or completions). */
export interface CompletionSummary {
  model: string;
  stream: boolean;
  promptTokens: number;
  completionTokens: number;
  /** stop, length, cancelled (client disconnected), error, shutdown, or null when generation never began. */
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
    const built = await preparePrompt(config, engine.contextSize, engine.encoder, {
      messages: parseMessages(body.messages),
      shape: body.shape ?? null,
      maxTokens: sampling.maxTokens,
    }, false);
    const stream = wantsStream(body, req.headers.accept, opts.alwaysStream);
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
    const stopped = () => opts.stopping.aborted && !reply.raw.destroyed;

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
    // Admission: the key's limits first (429), then the engine's queue (503); both before any header.
    const admission = opts.limiter.admit(req.principal!, built.promptTokens + built.maxOutputTokens);
    reply.headers(admission.headers);
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
    const entry = opts.usage.open({ requestId: req.id, keyId: req.principal?.keyId ?? null, model: config.id, stream, maxCompletionTokens: built.maxOutputTokens });
    const charge = new Charge(outcome, entry, () => reply.elapsedTime);
    try {
      const id = completionId();
      const created = Math.floor(Date.now() / 1000);
      const run = { events, outcome, charge, started, clientClosed: () => clientClosed };
      if (stream) await streamCompletion(req, reply, opts.keepaliveMs, new ChunkWriter(id, created, config.id), run, body, stopped);
      else await jsonCompletion(reply, id, created, run, stopped);
    } catch (err) {
      // The error handler answers after this: the row is final before that answer is written.
      charge.end({ status: err instanceof ApiError ? err.status : 500, clientClosed });
      throw err;
    } finally {
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
  stopped: () => boolean,
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
      // Cancelled: either the client is gone (nothing more to say) or the server is shutting down.
      if (stopped()) {
        outcome.finishReason = "shutdown";
        charge.end({ status: 200, clientClosed: false });
        await sse.send(JSON.stringify(errors.shuttingDown().body()));
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
  stopped: () => boolean,
): Promise<void> {
  const { outcome, charge } = run;
  let text = "";
  const finish = await consume(run, (t, tokens) => {
    charge.text(tokens, false); // delivered only with the whole answer
    text += t;
  });
  if (finish === null && stopped()) {
    outcome.finishReason = "shutdown";
    throw errors.shuttingDown();
  }
  if (finish === null) {
    reply.hijack(); // the client is gone
    reply.raw.destroy();
    return;
  }
  charge.end({ status: 200, clientClosed: run.clientClosed() }); // the row is final before the answer is written
  reply.send(completionObject(id, created, outcome.model, text, finish, usage(outcome.promptTokens, outcome.completionTokens)));
}
