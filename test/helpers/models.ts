import { existsSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeModel, type ModelSize } from "../../src/gguf/model-maker.js";
import { vocabDir } from "./paths.js";

const dir = join(tmpdir(), "lucena-test-models");

/**
 * A model made with the project's own maker, cached across test files of one machine (the file name says
 * everything it was made from, so a cached file is always the right one).
 */
export function testModel(
  opts: { size?: ModelSize; vocab?: "phi-3" | "deepseek-coder"; seed?: number; endsTurn?: boolean } = {},
): string {
  const size = opts.size ?? "tiny";
  const seed = opts.seed ?? 1234;
  let vocabPath: string | undefined;
  if (opts.vocab) {
    if (!vocabDir) throw new Error("vocab fixtures are absent");
    vocabPath = join(vocabDir, `ggml-vocab-${opts.vocab}.gguf`);
  }
  const out = join(dir, `${size}-${opts.vocab ?? "own"}-${seed}${opts.endsTurn ? "-ends-turn" : ""}.gguf`);
  if (!existsSync(out)) {
    mkdirSync(dir, { recursive: true });
    makeModel({ out, size, vocabPath, seed, endsTurn: opts.endsTurn });
  }
  return out;
}
