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
import { httpError } from "../http-errors.js";
import { streamSse } from "../sse.js";
import { resolveChat } from "../../prompt/resolve.js";
import type { TokenLogprob } from "../../engines/engine.js";
import {
  consume,
  endStream,
  endWhole,
  serveCompletion,
  streamFailure,
  wantsStream,
  type CompletionRouteOptions,
  type Run,
} from "../completion-flow.js";

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
        (text, tokens, logprobs) => {
          charge.text(tokens, sse.writable); // the ledger is ahead of the client before the text goes out
          return sse.send(chunks.content(text, logprobs));
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
      const end = await endStream(run, finish, (err) => sse.fail(httpError(err).body));
      if (end === null) return;
      if (includeUsage) await sse.send(chunks.usage(usage(outcome.promptTokens, outcome.completionTokens)));
      await sse.send(chunks.finish(end));
      await sse.done();
    },
    // Headers are out: the error goes in the stream, then [DONE]; never a silently truncated stream.
    (err, sse) => sse.fail(httpError(streamFailure(req, run, err)).body),
  );
}

async function jsonCompletion(reply: FastifyReply, run: Run, id: string): Promise<void> {
  const { outcome, charge } = run;
  let text = "";
  const calls: WireToolCall[] = [];
  let logprobs: TokenLogprob[] | null = null;
  const finish = await consume(
    run,
    (t, tokens, lp) => {
      charge.text(tokens, false); // delivered only with the whole answer
      text += t;
      if (lp) (logprobs ??= []).push(...lp);
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
  const end = endWhole(reply, run, finish);
  if (end === null) return;
  reply.send(
    completionObject(
      id,
      run.created,
      outcome.model,
      text,
      end,
      usage(outcome.promptTokens, outcome.completionTokens),
      calls.filter((c) => c !== undefined), // a replica may skip an index
      logprobs ?? (run.logprobs ? [] : null),
    ),
  );
}
