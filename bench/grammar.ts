import type { ModelConfig } from "../src/config/schema.js";
import type { OutputFormat } from "../src/engines/engine.js";
import { decodeSpeed, loadInProcess } from "./inproc.js";
import { median, round } from "./stats.js";

/**
 * What a grammar costs: decode speed of one stream held to a JSON Schema against the same stream free, the
 * embedded engine in this process, rounds alternating. The schema asks for a long array of short strings, so a
 * constrained answer runs as long as a free one (a random-weight model would otherwise close a small object
 * within a few tokens).
 */

export interface GrammarRun {
  constrained: boolean;
  tokens: number;
  decode_tok_s: number;
}

export interface GrammarResult {
  max_tokens: number;
  runs: GrammarRun[];
  free_tok_s: number;
  constrained_tok_s: number;
  /** constrained / free, medians of the rounds. */
  ratio: number;
}

export const GRAMMAR_SCHEMA = {
  type: "array",
  minItems: 400,
  items: {
    type: "object",
    properties: { word: { type: "string", maxLength: 6 }, n: { type: "integer", minimum: 0, maximum: 99 } },
    required: ["word", "n"],
    additionalProperties: false,
  },
} as const;

const FORMAT: OutputFormat = {
  kind: "json_schema",
  schema: GRAMMAR_SCHEMA,
  name: "bench",
  strict: true,
  field: "response_format",
};

export async function measureGrammarCost(opts: {
  config: ModelConfig;
  maxTokens: number;
  rounds: number;
  say: (text: string) => void;
}): Promise<GrammarResult> {
  const inproc = await loadInProcess(opts.config);
  const runs: GrammarRun[] = [];
  try {
    const prompt = await inproc.encode([{ role: "user", content: "List words with a number each, as JSON." }]);
    await decodeSpeed(inproc.engine, prompt, { maxTokens: 8, timeLimitMs: 60_000 }); // warm-up
    for (let round = 0; round < opts.rounds; round++) {
      for (const constrained of [false, true]) {
        const r = await decodeSpeed(inproc.engine, prompt, {
          maxTokens: opts.maxTokens,
          timeLimitMs: 120_000,
          seed: round + 1,
          format: constrained ? FORMAT : null,
        });
        runs.push({ constrained, tokens: r.tokens, decode_tok_s: r.tok_s });
        opts.say(
          `round ${round + 1}, ${constrained ? "held to a JSON Schema" : "free"}: ${r.tok_s} tok/s over ${r.tokens} tokens`,
        );
      }
    }
  } finally {
    await inproc.close();
  }
  const of = (constrained: boolean) =>
    median(runs.filter((r) => r.constrained === constrained).map((r) => r.decode_tok_s));
  const free = of(false);
  const constrained = of(true);
  return {
    max_tokens: opts.maxTokens,
    runs,
    free_tok_s: round(free),
    constrained_tok_s: round(constrained),
    ratio: round(constrained / free, 3),
  };
}
