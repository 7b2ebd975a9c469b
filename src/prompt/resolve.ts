import { parseMessages, parseSampling, type ChatBody, type SamplingRequest } from "../api/chat-request.js";
import {
  COMPLETION_MAX_TOKENS_DEFAULT,
  legacyLogprobs,
  promptOf,
  type CompletionBody,
} from "../api/completion-request.js";
import { errors } from "../core/errors.js";
import type { ModelConfig } from "../config/schema.js";
import { SAMPLING_DEFAULTS, type Engine, type Sampling } from "../engines/engine.js";
import { preparePrompt, type PreparedPrompt, type PromptInput } from "./build.js";

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
  return { prompt, sampling: samplingOf(asked, config, prompt.maxOutputTokens, prompt.shape) };
}

/**
 * A legacy completion's prompt and sampling: the raw prompt tokenized without the chat template (with `suffix`,
 * in the model's fill-in-the-middle form), max_tokens 16 unless given, as OpenAI's; the prompt must fit within
 * max_input_tokens and the context less max_tokens, or it is a 400 naming `prompt`. An upstream model's replica
 * is sent the prompt as it is (its legacy completions route); `suffix` is refused there.
 */
export async function resolveText(
  config: ModelConfig,
  engine: Pick<Engine, "contextSize" | "encoder">,
  body: CompletionBody,
): Promise<ResolvedChat> {
  const encoder = engine.encoder;
  const { logprobs: _legacy, top_logprobs: _top, ...rest } = body as Record<string, unknown>;
  const asked = { ...parseSampling({ ...(rest as CompletionBody), messages: [] }), logprobs: legacyLogprobs(body) };
  const maxTokens = body.max_tokens ?? COMPLETION_MAX_TOKENS_DEFAULT;
  if (maxTokens > config.max_output_tokens) {
    throw errors.invalidRequest(
      `max_tokens is ${maxTokens}, above this model's output limit of ${config.max_output_tokens}.`,
      "max_tokens",
    );
  }
  const sampling = { ...samplingOf(asked, config, maxTokens, null), tools: null };
  const prompt = promptOf(body);
  if (encoder.kind === "counter" || !encoder.encodeText) {
    // A replica tokenizes the prompt and reports its count; until then a guess holds the key's tokens (a token
    // is about four bytes of text), and the replica refuses a prompt too long for it.
    if (asked.logprobs !== null) {
      throw errors.invalidRequest(
        `The parameter 'logprobs' is not supported for legacy completions of the upstream model '${config.id}'.`,
        "logprobs",
      );
    }
    if (body.suffix != null) {
      throw errors.invalidRequest(
        `The parameter 'suffix' is not supported for the upstream model '${config.id}': servers differ in how they fill in the middle.`,
        "suffix",
      );
    }
    const guess = typeof prompt === "string" ? Math.ceil(Buffer.byteLength(prompt) / 4) + 1 : prompt.length;
    return { prompt: textPrompt({ kind: "text", prompt }, guess, maxTokens), sampling };
  }
  const budget = Math.min(config.max_input_tokens, engine.contextSize - maxTokens);
  if (budget <= 0) {
    throw errors.invalidRequest(
      `max_tokens ${maxTokens} leaves no room for a prompt in this model's context of ${engine.contextSize} tokens.`,
      "max_tokens",
    );
  }
  const tokens = await encoder.encodeText(prompt, body.suffix ?? null, budget);
  if (tokens.length > budget) {
    throw errors.invalidRequest(
      `The prompt has more than ${budget} tokens, the most that fit (input limit ${config.max_input_tokens}, ` +
        `context ${engine.contextSize}, ${maxTokens} for the answer).`,
      "prompt",
    );
  }
  return { prompt: textPrompt({ kind: "tokens", tokens }, tokens.length, maxTokens), sampling };
}

function textPrompt(input: PromptInput, promptTokens: number, maxOutputTokens: number): PreparedPrompt {
  return {
    input,
    promptTokens,
    messages: [],
    keptMessages: 0,
    systemPromptSource: "none",
    shapeId: null,
    shape: null,
    maxOutputTokens,
  };
}

/** Every sampling parameter given its value: the request's, else its shape's, else the model's, else llama.cpp's. */
function samplingOf(
  asked: SamplingRequest,
  config: ModelConfig,
  maxTokens: number,
  shape: PreparedPrompt["shape"],
): Sampling {
  return {
    maxTokens,
    temperature: asked.temperature ?? shape?.temperature ?? config.temperature,
    topP: asked.topP ?? shape?.top_p ?? SAMPLING_DEFAULTS.topP,
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
    logprobs: asked.logprobs,
  };
}
