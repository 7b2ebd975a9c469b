import { Type, type Static } from "@sinclair/typebox";
import type { FastifyInstance } from "fastify";
import { LucenaError, errors } from "../../core/errors.js";
import type { CompletionOutcome, CompletionRouteOptions } from "../completion-flow.js";
import { httpStatus } from "../http-errors.js";

/** OpenAI's most inputs in one request. */
const MAX_INPUTS = 2048;

const TokenList = Type.Array(Type.Integer({ minimum: 0 }), { minItems: 1 });

export const EmbeddingsBodySchema = Type.Object(
  {
    model: Type.String({ minLength: 1 }),
    input: Type.Union([
      Type.String(),
      Type.Array(Type.String(), { minItems: 1, maxItems: MAX_INPUTS }),
      TokenList,
      Type.Array(TokenList, { minItems: 1, maxItems: MAX_INPUTS }),
    ]),
    encoding_format: Type.Optional(Type.Union([Type.Literal("float"), Type.Literal("base64"), Type.Null()])),
    dimensions: Type.Optional(Type.Union([Type.Integer({ minimum: 1 }), Type.Null()])),
  },
  { additionalProperties: true },
);

type EmbeddingsBody = Static<typeof EmbeddingsBodySchema>;

/** The inputs as a list: one text, texts, one token list, or token lists. */
function inputsOf(input: EmbeddingsBody["input"]): (string | number[])[] {
  if (typeof input === "string") return [input];
  if (input.every((i) => typeof i === "number")) return [input];
  return input;
}

/** A vector as OpenAI's `base64` encoding sends it: its float32 values, little-endian, in base64. */
function base64(vector: Float32Array): string {
  const bytes = Buffer.alloc(vector.length * 4);
  vector.forEach((v, i) => bytes.writeFloatLE(v, i * 4));
  return bytes.toString("base64");
}

/**
 * POST /v1/embeddings, on a model configured with `kind: "embedding"`: the same key limits (rpm and concurrency
 * on arrival, tpm on the inputs' tokens) and ledger row (prompt tokens, no completion) as a completion.
 */
export function embeddingsRoute(app: FastifyInstance, opts: CompletionRouteOptions): void {
  app.post<{ Body: EmbeddingsBody }>(
    "/v1/embeddings",
    { schema: { body: EmbeddingsBodySchema } },
    async (req, reply) => {
      const body = req.body;
      const { config, engine } = opts.registry.embedding(body.model, req.principal);
      // An embedded model's size is known here; an upstream one passes `dimensions` on to its replicas.
      if (body.dimensions != null && engine.dimensions !== undefined && body.dimensions !== engine.dimensions) {
        throw errors.invalidRequest(
          `The model '${config.id}' gives vectors of ${engine.dimensions} dimensions only; 'dimensions' cannot change that.`,
          "dimensions",
        );
      }
      const admission = opts.limiter.admit(req.principal!);
      reply.headers(admission.headers);
      const abort = new AbortController();
      const onClose = () => abort.abort();
      reply.raw.on("close", onClose);
      const outcome: CompletionOutcome = {
        model: config.id,
        stream: false,
        promptTokens: 0,
        completionTokens: 0,
        finishReason: null,
        ttftMs: null,
        settled: Promise.resolve(),
      };
      let started = false;
      let entry: ReturnType<typeof opts.usage.open> | null = null;
      try {
        const result = await engine.embed(
          inputsOf(body.input),
          abort.signal,
          (tokens) => {
            admission.reserve(tokens);
            reply.headers(admission.headers);
            started = true;
            outcome.promptTokens = tokens;
            req.completion = outcome; // from here on the request has reached the model: it is in the ledger
            entry = opts.usage.open({
              requestId: req.id,
              keyId: req.principal?.keyId ?? null,
              model: config.id,
              stream: false,
              maxCompletionTokens: 0,
            });
          },
          body.dimensions ?? null,
        );
        const done = abort.signal.aborted ? null : result;
        outcome.finishReason = done ? "stop" : "cancelled";
        (entry as ReturnType<typeof opts.usage.open> | null)?.end({
          promptTokens: result.promptTokens,
          completionTokens: 0,
          ttftMs: null,
          durationMs: reply.elapsedTime,
          status: done ? 200 : 499,
          state: done ? "complete" : "client_closed",
          finishReason: outcome.finishReason,
        });
        admission.settle(result.promptTokens);
        if (!done) {
          reply.hijack();
          reply.raw.destroy();
          return reply;
        }
        const float = body.encoding_format !== "base64";
        return reply.send({
          object: "list",
          data: done.vectors.map((v, index) => ({
            object: "embedding",
            index,
            embedding: float ? Array.from(v) : base64(v),
          })),
          model: config.id,
          usage: { prompt_tokens: done.promptTokens, total_tokens: done.promptTokens },
        });
      } catch (err) {
        if (!started) admission.settle(0);
        else admission.settle(outcome.promptTokens);
        (entry as ReturnType<typeof opts.usage.open> | null)?.end({
          promptTokens: outcome.promptTokens,
          completionTokens: 0,
          ttftMs: null,
          durationMs: reply.elapsedTime,
          status: err instanceof LucenaError ? httpStatus(err) : 500,
          state: "complete",
          finishReason: "error",
        });
        throw err;
      } finally {
        reply.raw.off("close", onClose);
      }
    },
  );
}
