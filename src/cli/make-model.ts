import { makeModel, type ModelSize } from "../gguf/model-maker.js";

export function makeModelCommand(opts: { out: string; vocab?: string; size: ModelSize; seed: number }): void {
  const started = performance.now();
  const made = makeModel({ out: opts.out, size: opts.size, vocabPath: opts.vocab, seed: opts.seed });
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  process.stdout.write(
    `wrote ${made.path}: ${opts.size}, ${(made.parameters / 1e6).toFixed(1)}M parameters, vocabulary ${made.vocabSize}, ` +
      `${(made.bytes / 1024 / 1024).toFixed(1)} MiB in ${seconds} s\n`,
  );
}
