import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { checkUnsupported } from "../../api/chat-request.js";
import {
  checkCompletionUnsupported,
  CompletionBodySchema,
  legacyLogprobsObject,
  promptOf,
  type CompletionBody,
} from "../../api/completion-request.js";
import { textCompletionId, textCompletionObject, TextChunkWriter, usage } from "../../api/responses.js";
import { resolveText } from "../../prompt/resolve.js";
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
import { httpError } from "../http-errors.js";
import { streamSse } from "../sse.js";

/**
 * POST /v1/completions: OpenAI's legacy completions, a raw prompt without the chat template, and with `suffix`
 * fill-in-the-middle on the model's FIM tokens (what editor plugins send for code completion). The same
 * completion flow as chat: limits, engine, ledger.
 */
export function completionsRoute(app: FastifyInstance, opts: CompletionRouteOptions): void {
  app.post<{ Body: CompletionBody }>(
    "/v1/completions",
    { schema: { body: CompletionBodySchema } },
    async (req, reply) => {
      const body = req.body;
      checkCompletionUnsupported(body);
      checkUnsupported(body);
      const model = opts.registry.chat(body.model, req.principal);
      const stream = wantsStream(body, req.headers.accept, opts.alwaysStream);
      const id = textCompletionId();
      const echo = body.echo === true ? (promptOf(body) as string) : "";
      const resolve = () => resolveText(model.config, model.engine, body);
      await serveCompletion(req, reply, opts, model, resolve, stream, (run) =>
        stream
          ? streamText(req, reply, opts.keepaliveMs, run, id, echo, body.stream_options?.include_usage === true)
          : jsonText(reply, run, id, echo),
      );
      return reply;
    },
  );
}

async function jsonText(reply: FastifyReply, run: Run, id: string, echo: string): Promise<void> {
  const { outcome, charge } = run;
  let text = echo;
  const logprobs: TokenLogprob[] = [];
  const finish = await consume(
    run,
    (t, tokens, lp) => {
      charge.text(tokens, false); // delivered only with the whole answer
      text += t;
      if (lp) logprobs.push(...lp);
    },
    () => undefined, // no tools on a raw prompt
  );
  const end = endWhole(reply, run, finish);
  if (end === null) return;
  reply.send(
    textCompletionObject(
      id,
      run.created,
      outcome.model,
      text,
      end,
      usage(outcome.promptTokens, outcome.completionTokens),
      run.logprobs ? legacyLogprobsObject(logprobs, 0) : null,
    ),
  );
}

/** OpenAI's legacy stream: text chunks, the finish chunk, the usage chunk when asked, [DONE]. */
async function streamText(
  req: FastifyRequest,
  reply: FastifyReply,
  keepaliveMs: number,
  run: Run,
  id: string,
  echo: string,
  includeUsage: boolean,
): Promise<void> {
  const { outcome, charge } = run;
  const chunks = new TextChunkWriter(id, run.created, outcome.model);
  reply.hijack();
  await streamSse(
    reply.raw,
    reply.getHeaders(),
    keepaliveMs,
    async (sse) => {
      if (echo !== "") await sse.send(chunks.text(echo));
      let offset = echo.length;
      const finish = await consume(
        run,
        (text, tokens, lp) => {
          charge.text(tokens, sse.writable); // the ledger is ahead of the client before the text goes out
          const chunk = chunks.text(text, run.logprobs ? legacyLogprobsObject(lp ?? [], offset) : null);
          offset += text.length;
          return sse.send(chunk);
        },
        () => undefined,
      );
      const end = await endStream(run, finish, (err) => sse.fail(httpError(err).body));
      if (end === null) return;
      await sse.send(chunks.finish(end));
      if (includeUsage) await sse.send(chunks.usage(usage(outcome.promptTokens, outcome.completionTokens)));
      await sse.done();
    },
    (err, sse) => sse.fail(httpError(streamFailure(req, run, err)).body),
  );
}
