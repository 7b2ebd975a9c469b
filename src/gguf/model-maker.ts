import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { GgmlType, GgufType, TokenType, type GgufValue } from "./format.js";
import { readGgufMetadata } from "./reader.js";
import { buildByteBpeVocab, ownTokenizerMetadata } from "./tokenizer.js";
import { writeGguf, type TensorSpec } from "./writer.js";

export type ModelSize = "tiny" | "small" | "bench";

interface Shape {
  vocab: number; // used only with the project's own tokenizer
  embd: number;
  layers: number;
  heads: number;
  kvHeads: number;
  ff: number;
}

/**
 * `tiny` loads in milliseconds for tests. `bench` is shaped like a real small llama model (~0.43B parameters
 * with a 32k vocabulary, Q8_0), so its decode speed is representative of what users serve.
 */
export const MODEL_SHAPES: Record<ModelSize, Shape> = {
  tiny: { vocab: 2048, embd: 64, layers: 2, heads: 4, kvHeads: 2, ff: 192 },
  // The bench model's vocabulary (so its logits and KV buffers are large enough for the engine's lazy zeroing)
  // at a size that loads and decodes quickly: for tests of the native side under load (20 MB).
  small: { vocab: 32000, embd: 256, layers: 4, heads: 4, kvHeads: 2, ff: 512 },
  bench: { vocab: 32000, embd: 1024, layers: 23, heads: 16, kvHeads: 8, ff: 4096 },
};

export const TRAIN_CONTEXT = 131072;

export interface MakeModelOptions {
  out: string;
  size: ModelSize;
  /** A GGUF whose `tokenizer.*` metadata is copied (a vocabulary-only file is enough). */
  vocabPath?: string;
  seed?: number;
  /**
   * Make the end-of-turn token the likeliest after every token instead of never chosen, so the model ends its
   * turn at once: tests use it to prove the end-of-generation path (finish_reason "stop").
   */
  endsTurn?: boolean;
  /** A Jinja chat template written as `tokenizer.chat_template` (else the vocabulary's own, or ChatML). */
  chatTemplate?: string;
  /**
   * An embedding model: `llama.pooling_type` mean (llama.cpp then pools every token's output into one vector),
   * to serve with `kind: "embedding"`.
   */
  embedding?: boolean;
}

export interface MadeModel {
  path: string;
  bytes: number;
  parameters: number;
  vocabSize: number;
}

/** xorshift32: fast, seeded, reproducible weights. Yields uniform values in [-1, 1). */
function uniformSource(seed: number): () => number {
  let x = seed >>> 0 || 0x9e3779b9;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2147483648 - 1;
  };
}

interface TokenizerPart {
  meta: Map<string, GgufValue>;
  vocabSize: number;
  specialIds: number[];
  eosId: number;
}

function tokenizerFromFile(path: string): TokenizerPart {
  const all = readGgufMetadata(path);
  const meta = new Map<string, GgufValue>();
  for (const [key, value] of all) if (key.startsWith("tokenizer.")) meta.set(key, value);
  const tokens = meta.get("tokenizer.ggml.tokens");
  if (!tokens || tokens.type !== GgufType.ARRAY) throw new Error(`${path} holds no tokenizer.ggml.tokens`);
  const types = meta.get("tokenizer.ggml.token_type");
  const special = new Set<number>();
  if (types?.type === GgufType.ARRAY) {
    types.items.forEach((t, i) => {
      if (t !== TokenType.NORMAL && t !== TokenType.BYTE) special.add(i);
    });
  }
  for (const key of ["bos", "eos", "eot", "eom", "padding", "unknown", "separator"]) {
    const v = meta.get(`tokenizer.ggml.${key}_token_id`);
    if (v && v.type !== GgufType.ARRAY) special.add(Number(v.value));
  }
  const eos = meta.get("tokenizer.ggml.eos_token_id");
  return {
    meta,
    vocabSize: tokens.items.length,
    specialIds: [...special],
    eosId: eos && eos.type !== GgufType.ARRAY ? Number(eos.value) : -1,
  };
}

/**
 * Makes a llama-architecture GGUF with seeded random weights, constructed so that the model never selects a
 * special token: every token embedding carries a constant in dimension 0, which every normal token's output
 * row rewards (adding roughly 20 nats to its logit) while special tokens' rows are zero. Generation therefore
 * always runs to max_tokens or a stop sequence, which is what tests and benchmarks need.
 */
export function makeModel(opts: MakeModelOptions): MadeModel {
  const shape = MODEL_SHAPES[opts.size];
  const rand = uniformSource(opts.seed ?? 1234);
  const tok: TokenizerPart = opts.vocabPath
    ? tokenizerFromFile(opts.vocabPath)
    : (() => {
        const v = buildByteBpeVocab(shape.vocab);
        return {
          meta: ownTokenizerMetadata(v),
          vocabSize: v.tokens.length,
          specialIds: [...v.specialIds, ...v.rawByteIds],
          eosId: v.tokens.indexOf("<|im_end|>"),
        };
      })();
  const { embd, layers, heads, kvHeads, ff } = shape;
  const headDim = embd / heads;
  const kvDim = headDim * kvHeads;
  const vocab = tok.vocabSize;
  const special = new Set(tok.specialIds);

  const sqrt3 = Math.sqrt(3); // uniform on [-a, a] has standard deviation a / sqrt(3)
  const random = (std: number) => (_row: number, out: Float32Array) => {
    const a = std * sqrt3;
    for (let i = 0; i < out.length; i++) out[i] = rand() * a;
  };
  const ones = (_row: number, out: Float32Array) => out.fill(1);
  const anchor = Math.sqrt(embd); // dimension 0 of every embedding: about half of its norm
  const reward = 48 / Math.sqrt(embd); // weight of dimension 0 in normal tokens' output rows

  const tensors: TensorSpec[] = [
    {
      name: "token_embd.weight",
      shape: [embd, vocab],
      type: GgmlType.Q8_0,
      fillRow: (row, out) => {
        random(1)(row, out);
        out[0] = anchor;
      },
    },
  ];
  for (let l = 0; l < layers; l++) {
    const p = `blk.${l}`;
    tensors.push(
      { name: `${p}.attn_norm.weight`, shape: [embd], type: GgmlType.F32, fillRow: ones },
      { name: `${p}.attn_q.weight`, shape: [embd, embd], type: GgmlType.Q8_0, fillRow: random(1 / Math.sqrt(embd)) },
      { name: `${p}.attn_k.weight`, shape: [embd, kvDim], type: GgmlType.Q8_0, fillRow: random(1 / Math.sqrt(embd)) },
      { name: `${p}.attn_v.weight`, shape: [embd, kvDim], type: GgmlType.Q8_0, fillRow: random(1 / Math.sqrt(embd)) },
      {
        name: `${p}.attn_output.weight`,
        shape: [embd, embd],
        type: GgmlType.Q8_0,
        fillRow: random(0.3 / Math.sqrt(embd)),
      },
      { name: `${p}.ffn_norm.weight`, shape: [embd], type: GgmlType.F32, fillRow: ones },
      { name: `${p}.ffn_gate.weight`, shape: [embd, ff], type: GgmlType.Q8_0, fillRow: random(1 / Math.sqrt(embd)) },
      { name: `${p}.ffn_up.weight`, shape: [embd, ff], type: GgmlType.Q8_0, fillRow: random(1 / Math.sqrt(embd)) },
      { name: `${p}.ffn_down.weight`, shape: [ff, embd], type: GgmlType.Q8_0, fillRow: random(0.6 / Math.sqrt(ff)) },
    );
  }
  tensors.push(
    { name: "output_norm.weight", shape: [embd], type: GgmlType.F32, fillRow: ones },
    {
      name: "output.weight",
      shape: [embd, vocab],
      type: GgmlType.Q8_0,
      fillRow: (row, out) => {
        if (opts.endsTurn && row === tok.eosId) {
          out[0] = 2 * reward;
          return;
        }
        if (special.has(row)) return; // stays zero: never the likeliest, never sampled in practice
        random(1.5 / Math.sqrt(embd))(row, out);
        out[0] = reward;
      },
    },
  );

  const u32 = (value: number): GgufValue => ({ type: GgufType.UINT32, value });
  const f32 = (value: number): GgufValue => ({ type: GgufType.FLOAT32, value });
  const meta = new Map<string, GgufValue>([
    ["general.architecture", { type: GgufType.STRING, value: "llama" }],
    ["general.name", { type: GgufType.STRING, value: `Lucena demo (${opts.size}, random weights)` }],
    ["general.file_type", u32(7)], // LLAMA_FTYPE_MOSTLY_Q8_0
    ["general.quantization_version", u32(2)],
    ["llama.vocab_size", u32(vocab)],
    ["llama.context_length", u32(TRAIN_CONTEXT)],
    ["llama.embedding_length", u32(embd)],
    ["llama.block_count", u32(layers)],
    ["llama.feed_forward_length", u32(ff)],
    ["llama.attention.head_count", u32(heads)],
    ["llama.attention.head_count_kv", u32(kvHeads)],
    ["llama.rope.dimension_count", u32(headDim)],
    ["llama.rope.freq_base", f32(10000)],
    ["llama.attention.layer_norm_rms_epsilon", f32(1e-5)],
    ...tok.meta,
  ]);
  if (opts.embedding) meta.set("llama.pooling_type", u32(1)); // LLAMA_POOLING_TYPE_MEAN
  if (opts.chatTemplate !== undefined) {
    meta.set("tokenizer.chat_template", { type: GgufType.STRING, value: opts.chatTemplate });
  }

  mkdirSync(dirname(opts.out), { recursive: true });
  const { bytes } = writeGguf(opts.out, meta, tensors);
  const parameters = tensors.reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
  return { path: opts.out, bytes, parameters, vocabSize: vocab };
}
