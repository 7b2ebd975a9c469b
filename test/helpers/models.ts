import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeModel, type ModelSize } from "../../src/gguf/model-maker.js";
import { sha256Hex } from "../../src/core/ids.js";
import { repoRoot, vocabDir } from "./paths.js";

const dir = join(tmpdir(), "lucena-test-models");

/**
 * A model made with the project's own maker, cached across test files of one machine (the file name says
 * everything it was made from, so a cached file is always the right one).
 */
export function testModel(
  opts: {
    size?: ModelSize;
    vocab?: "phi-3" | "deepseek-coder";
    seed?: number;
    endsTurn?: boolean;
    /** A chat template of test/fixtures/templates (its file name without `.jinja`). */
    template?: string;
    /** An embedding model (mean pooling). */
    embedding?: boolean;
  } = {},
): string {
  const size = opts.size ?? "tiny";
  const seed = opts.seed ?? 1234;
  let vocabPath: string | undefined;
  if (opts.vocab) {
    if (!vocabDir) throw new Error("vocab fixtures are absent");
    vocabPath = join(vocabDir, `ggml-vocab-${opts.vocab}.gguf`);
  }
  const chatTemplate =
    opts.template === undefined
      ? undefined
      : readFileSync(join(repoRoot, "test", "fixtures", "templates", `${opts.template}.jinja`), "utf8");
  // The template's own hash names the file, so an edited template makes a new model.
  const templateTag = chatTemplate === undefined ? "" : `-${opts.template}-${sha256Hex(chatTemplate).slice(0, 8)}`;
  const out = join(
    dir,
    `${size}-${opts.vocab ?? "own"}-${seed}${opts.endsTurn ? "-ends-turn" : ""}${opts.embedding ? "-embedding" : ""}${templateTag}.gguf`,
  );
  if (!existsSync(out)) {
    mkdirSync(dir, { recursive: true });
    makeModel({ out, size, vocabPath, seed, endsTurn: opts.endsTurn, chatTemplate, embedding: opts.embedding });
  }
  return out;
}
