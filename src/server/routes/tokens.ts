import type { FastifyInstance } from "fastify";
import { ChatBodySchema, type ChatBody } from "../../api/chat-request.js";
import { tokenCountObject } from "../../api/responses.js";
import { resolveChat } from "../../prompt/resolve.js";
import type { RateLimiter } from "../../keys/limiter.js";
import type { ModelRegistry } from "../registry.js";

export function tokensRoute(app: FastifyInstance, registry: ModelRegistry, limiter: RateLimiter): void {
  app.post<{ Body: ChatBody }>("/v1/tokens/count", { schema: { body: ChatBodySchema } }, async (req, reply) => {
    const body = req.body;
    const { config, engine } = registry.chat(body.model, req.principal);
    // Counts have a rate of their own, checked before any tokenization.
    reply.headers(limiter.admitCount(req.principal!));
    const { prompt: built } = await resolveChat(config, engine, body, "count");
    return tokenCountObject({
      model: config.id,
      promptTokens: built.promptTokens,
      limits: {
        trimLimit: config.max_input_tokens,
        contextSize: engine.contextSize,
        contextLimit: config.context_window,
        outputLimit: config.max_output_tokens,
      },
      systemPromptSource: built.systemPromptSource,
      keptMessages: built.keptMessages,
      shapeId: built.shapeId,
    });
  });
}
