import { parseMessages, parseSampling, type ChatBody } from "../api/chat-request.js";
import type { ModelConfig } from "../config/schema.js";
import { SAMPLING_DEFAULTS, type Engine, type Sampling } from "../engines/engine.js";
import { preparePrompt, type PreparedPrompt } from "./build.js";

/** A chat request body, resolved once for every route that reads one (completions, counts). */
export interface ResolvedChat {
  prompt: PreparedPrompt;
  /** The sampling the answer is generated with: the request's, else its shape's, else the model's, else llama.cpp's. */
  sampling: Sampling;
}

/**
 * The one place a chat body becomes a prompt and sampling: messages read, the system prompt and shape resolved,
 * the conversation trimmed to fit, and every sampling parameter given its value. `purpose: "count"` measures the
 * prompt exactly; a completion lets a counted model skip its count when a bound shows the prompt fits.
 */
export async function resolveChat(
  config: ModelConfig,
  engine: Pick<Engine, "contextSize" | "encoder">,
  body: ChatBody,
  purpose: "completion" | "count",
): Promise<ResolvedChat> {
  const asked = parseSampling(body);
  const prompt = await preparePrompt(
    config,
    engine.contextSize,
    engine.encoder,
    {
      messages: parseMessages(body.messages),
      shape: body.shape ?? null,
      maxTokens: asked.maxTokens,
      tools: asked.tools?.tools ?? null,
    },
    purpose === "count",
  );
  return {
    prompt,
    sampling: {
      maxTokens: prompt.maxOutputTokens,
      temperature: asked.temperature ?? prompt.shape?.temperature ?? config.temperature,
      topP: asked.topP ?? prompt.shape?.top_p ?? SAMPLING_DEFAULTS.topP,
      topK: asked.topK ?? SAMPLING_DEFAULTS.topK,
      seed: asked.seed,
      presencePenalty: asked.presencePenalty,
      frequencyPenalty: asked.frequencyPenalty,
      minP: asked.minP,
      repeatPenalty: asked.repeatPenalty,
      ignoreEos: asked.ignoreEos,
      stop: asked.stop,
      format: asked.format,
      tools: asked.tools,
      logitBias: asked.logitBias,
    },
  };
}
