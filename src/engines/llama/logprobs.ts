import type { LlamaModel, Token } from "node-llama-cpp";
import type { TokenLogprob } from "../engine.js";

/** The most alternatives a token's log-probability comes with (OpenAI's top_logprobs maximum). */
export const MAX_TOP_LOGPROBS = 20;

/**
 * The tokens of node-llama-cpp's `evaluateWithMetadata` (probabilities asked for), each recorded with its
 * log-probability and its `top` likeliest alternatives before it is handed on. The probabilities are those of the
 * distribution the token was drawn from, after the sampler's filters and temperature (llama.cpp's
 * "post-sampling" probabilities); with temperature 0, the model's own distribution. Ending this iteration ends
 * node-llama-cpp's.
 */
export async function* withLogprobs(
  steps: AsyncGenerator<{ token: Token; probabilities: Map<Token, number> }, void, void | Token | Token[]>,
  model: LlamaModel,
  top: number,
  record: (entry: TokenLogprob) => void,
): AsyncGenerator<Token, void, undefined> {
  try {
    for await (const { token, probabilities } of steps) {
      record(logprobOf(model, token, probabilities, top));
      yield token;
    }
  } finally {
    await steps.return();
  }
}

function logprobOf(model: LlamaModel, token: Token, probabilities: Map<Token, number>, top: number): TokenLogprob {
  // The `top` likeliest, kept sorted as the map is read once: the map may hold the whole vocabulary.
  const best: [Token, number][] = [];
  if (top > 0) {
    for (const entry of probabilities) {
      if (best.length === top && entry[1] <= best[top - 1]![1]) continue;
      let i = best.length - (best.length === top ? 1 : 0);
      if (best.length === top) best.pop();
      while (i > 0 && best[i - 1]![1] < entry[1]) i--;
      best.splice(i, 0, entry);
    }
  }
  const piece = (t: Token) => {
    const text = model.detokenize([t], true);
    return { token: text, bytes: [...Buffer.from(text, "utf8")] };
  };
  return {
    ...piece(token),
    logprob: Math.log(probabilities.get(token) ?? 0),
    top_logprobs: best.map(([t, p]) => ({ ...piece(t), logprob: Math.log(p) })),
  };
}
