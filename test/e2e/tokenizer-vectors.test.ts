import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { getLlama, type Llama, type LlamaModel } from "node-llama-cpp";
import { testModel } from "../helpers/models.js";
import { NO_SHARED, vocabDir } from "../helpers/paths.js";

/**
 * The upstream tokenizer test vectors (llama.cpp's tests/test-tokenizer-0), run through node-llama-cpp:
 * the real vocabularies must tokenize exactly as llama.cpp's own test expects, and a model made with the
 * project's maker from each vocabulary must tokenize exactly as the vocabulary file does.
 */

interface Vector {
  input: string;
  expected: number[];
}

const SEPARATOR = Buffer.from("\n__ggml_vocab_test__\n", "utf8");

/**
 * Reads `<vocab>.inp` and `<vocab>.out` as test-tokenizer-0's read_tests does: the inputs are the raw file split on
 * "\n__ggml_vocab_test__\n" (a trailing piece after the last separator counts only if non-empty), and each line of
 * the output file, stripped, is a space-separated list of token ids for the input with the same index.
 */
function readVectors(vocabFile: string): Vector[] {
  const raw = readFileSync(`${vocabFile}.inp`);
  const inputs: string[] = [];
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  let pos = 0;
  while (pos < raw.length) {
    const next = raw.indexOf(SEPARATOR, pos);
    if (next === -1) {
      inputs.push(utf8.decode(raw.subarray(pos)));
      break;
    }
    inputs.push(utf8.decode(raw.subarray(pos, next)));
    pos = next + SEPARATOR.length;
  }
  const outText = readFileSync(`${vocabFile}.out`, "utf8");
  const lines = outText.split("\n");
  if (lines.at(-1) === "") lines.pop(); // getline yields no line after the final newline
  assert.equal(inputs.length, lines.length, `${vocabFile}: input and output files have different numbers of tests`);
  return inputs.map((input, i) => {
    const o = lines[i].trim();
    return { input, expected: o === "" ? [] : o.split(" ").map((t) => Number.parseInt(t, 10)) };
  });
}

/** test-tokenizer-0 tokenizes with add_special = false and parse_special = false. */
const tokenize = (model: LlamaModel, text: string) => model.tokenize(text, false);

interface Failure {
  input: string;
  expected: number[];
  got: number[];
}

function describeFailures(failures: Failure[]): string {
  return failures
    .slice(0, 8)
    .map(
      (f) =>
        `  ${JSON.stringify(f.input)}\n    expected ${JSON.stringify(f.expected)}\n    got      ${JSON.stringify(f.got)}`,
    )
    .join("\n");
}

const VOCABS = [
  { name: "phi-3", file: "ggml-vocab-phi-3.gguf" },
  { name: "deepseek-coder", file: "ggml-vocab-deepseek-coder.gguf" },
] as const;

const skip = vocabDir === null ? NO_SHARED : false;

describe("tokenizer test vectors (llama.cpp test-tokenizer-0)", () => {
  let llama: Llama | null = null;

  before(async () => {
    if (vocabDir !== null) llama = await getLlama({ gpu: false });
  });
  after(async () => {
    await llama?.dispose();
  });

  test("the vector files parse as test-tokenizer-0 reads them", { skip }, () => {
    for (const { file } of VOCABS) {
      const vectors = readVectors(join(vocabDir!, file));
      assert.ok(vectors.length >= 40, `${file}: ${vectors.length} vectors`);
      // The separator scheme yields an empty input (its expected ids are an empty line).
      assert.ok(
        vectors.some((v) => v.input === "" && v.expected.length === 0),
        `${file}: has the empty input`,
      );
      assert.ok(
        vectors.some((v) => v.input === "Hello world"),
        `${file}: has "Hello world"`,
      );
      assert.ok(
        vectors.every((v) => v.expected.every((id) => Number.isInteger(id) && id >= 0)),
        `${file}: ids are integers`,
      );
    }
  });

  for (const { name, file } of VOCABS) {
    test(`${name}: the vocabulary file tokenizes every vector as expected`, { skip }, async (t) => {
      const path = join(vocabDir!, file);
      const vectors = readVectors(path);
      const model = await llama!.loadModel({ modelPath: path, vocabOnly: true });
      try {
        // node-llama-cpp's tokenize(text, false) adds no BOS, like test-tokenizer-0's add_special = false.
        assert.notEqual(model.tokens.bos, null, `${name} has a BOS token`);
        assert.notEqual(tokenize(model, "Hello world")[0], model.tokens.bos, "no BOS is added");
        const failures: Failure[] = [];
        for (const v of vectors) {
          const got = tokenize(model, v.input);
          if (JSON.stringify(got) !== JSON.stringify(v.expected)) failures.push({ ...v, got });
        }
        const passed = vectors.length - failures.length;
        t.diagnostic(`${file}: ${passed}/${vectors.length} vectors passed`);
        assert.equal(
          passed,
          vectors.length,
          `${file}: ${passed}/${vectors.length} vectors passed; failures:\n${describeFailures(failures)}`,
        );
      } finally {
        await model.dispose();
      }
    });

    test(
      `${name}: a model made with this vocabulary tokenizes every vector like the vocabulary file`,
      { skip },
      async (t) => {
        const vocabPath = join(vocabDir!, file);
        const vectors = readVectors(vocabPath);
        const madePath = testModel({ vocab: name });
        const vocab = await llama!.loadModel({ modelPath: vocabPath, vocabOnly: true });
        try {
          const made = await llama!.loadModel({ modelPath: madePath });
          try {
            assert.equal(made.fileInfo.metadata.general.architecture, "llama");
            assert.deepEqual(made.tokens.bos, vocab.tokens.bos);
            assert.deepEqual(made.tokens.eos, vocab.tokens.eos);
            const failures: Failure[] = [];
            let matchesExpected = 0;
            for (const v of vectors) {
              const expected = tokenize(vocab, v.input);
              const got = tokenize(made, v.input);
              if (JSON.stringify(got) !== JSON.stringify(expected)) failures.push({ input: v.input, expected, got });
              if (JSON.stringify(got) === JSON.stringify(v.expected)) matchesExpected++;
              // Detokenizing gives the same text through either.
              assert.equal(made.detokenize(got), vocab.detokenize(expected), `detokenize ${JSON.stringify(v.input)}`);
            }
            const passed = vectors.length - failures.length;
            t.diagnostic(
              `${file} → made model: ${passed}/${vectors.length} like the vocabulary file, ${matchesExpected}/${vectors.length} match upstream`,
            );
            assert.equal(
              passed,
              vectors.length,
              `${file} → made model: ${passed}/${vectors.length} vectors tokenized like the vocabulary file; differences:\n${describeFailures(failures)}`,
            );
            assert.equal(
              matchesExpected,
              vectors.length,
              `${file} → made model: ${matchesExpected}/${vectors.length} vectors match the upstream expected ids`,
            );
            // The chat template is copied too, where the vocabulary has one.
            const vocabTemplate = vocab.fileInfo.metadata.tokenizer?.chat_template;
            assert.equal(made.fileInfo.metadata.tokenizer?.chat_template, vocabTemplate);
          } finally {
            await made.dispose();
          }
        } finally {
          await vocab.dispose();
        }
      },
    );
  }
});
