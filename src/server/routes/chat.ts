import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { checkUnsupported, ChatBodySchema, type ChatBody } from "../../api/chat-request.js";
import {
  ChunkWriter,
  completionId,
  completionObject,
  toolCallId,
  usage,
  type WireToolCall,
} from "../../api/responses.js";
import { LucenaError, errors } from "../../core/errors.js";
import { httpError } from "../http-errors.js";
import { streamSse } from "../sse.js";
import { resolveChat } from "../../prompt/resolve.js";
import { consume, serveCompletion, wantsStream, type CompletionRouteOptions, type Run } from "../completion-flow.js";

export function chatRoute(app: FastifyInstance, opts: CompletionRouteOptions): void {
  app.decorateRequest("completion", null);
  app.post<{ Body: ChatBody }>("/v1/chat/completions", { schema: { body: ChatBodySchema } }, async (req, reply) => {
    const body = req.body;
    checkUnsupported(body);
    const model = opts.registry.chat(body.model, req.principal);
    const stream = wantsStream(body, req.headers.accept, opts.alwaysStream);
    const id = completionId();
    const resolve = () => resolveChat(model.config, model.engine, body, "completion");
    await serveCompletion(req, reply, opts, model, resolve, stream, (run) =>
      stream
        ? streamCompletion(req, reply, opts.keepaliveMs, run, id, body.stream_options?.include_usage !== false)
        : jsonCompletion(reply, run, id),
    );
    return reply;
  });
}

async function streamCompletion(
  req: FastifyRequest,
  reply: FastifyReply,
  keepaliveMs: number,
  run: Run,
  id: string,
  includeUsage: boolean,
): Promise<void> {
  const { outcome, charge } = run;
  const chunks = new ChunkWriter(id, run.created, outcome.model);
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
    (err, sse) => {
      // Headers are out: the error goes in the stream, then [DONE]; never a silently truncated stream.
      if (!(err instanceof LucenaError)) req.log.error({ err }, "generation failed mid-stream");
      outcome.finishReason = "error";
      charge.end({ status: 200, clientClosed: run.clientClosed() });
      return sse.fail(httpError(err instanceof LucenaError ? err : errors.internal()).body);
    },
  );
}

async function jsonCompletion(reply: FastifyReply, run: Run, id: string): Promise<void> {
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
      id,
      run.created,
      outcome.model,
      text,
      finish,
      usage(outcome.promptTokens, outcome.completionTokens),
      calls.filter((c) => c !== undefined), // a replica may skip an index
    ),
  );
}
