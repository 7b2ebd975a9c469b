import { GgufType, TokenType, type GgufValue } from "./format.js";

/**
 * The project's own tokenizer for made models: byte-level BPE (GPT-2 style, `tokenizer.ggml.model = gpt2`)
 * with a deterministic merge list, so llama.cpp tokenizes any text, including arbitrary bytes, and a
 * sentence of English takes a realistic number of tokens. The chat template is ChatML.
 */

export const SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] as const;

export const CHATML_TEMPLATE =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/** GPT-2's reversible byte → printable-character map (the `Ġ` for space, `Ċ` for newline, …). */
function byteToUnicode(): string[] {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const map = new Array<string>(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    map[b] = printable.includes(b) ? String.fromCodePoint(b) : String.fromCodePoint(256 + extra++);
  }
  return map;
}

export interface BuiltVocab {
  tokens: string[];
  tokenTypes: number[];
  merges: string[];
  /** Ids of control tokens, whose output rows a made model zeroes so it never selects them. */
  specialIds: number[];
  /**
   * Byte tokens outside printable ASCII (lone UTF-8 lead or continuation bytes, control characters): a model
   * with random weights that emitted them would produce invalid UTF-8, so made models never select them.
   */
  rawByteIds: number[];
}

/** Builds a vocabulary of exactly `size` tokens (at least 259: bytes + the three special tokens). */
export function buildByteBpeVocab(size: number): BuiltVocab {
  const bytes = byteToUnicode();
  const tokens = [...bytes];
  const known = new Set(tokens);
  const merges: string[] = [];
  const budget = size - SPECIAL_TOKENS.length;
  if (budget < 256) throw new Error(`a byte-level vocabulary needs at least ${256 + SPECIAL_TOKENS.length} tokens`);

  const merge = (a: string, b: string): boolean => {
    if (tokens.length >= budget) return false;
    const joined = a + b;
    if (!known.has(a) || !known.has(b) || known.has(joined)) return true;
    merges.push(`${a} ${b}`);
    tokens.push(joined);
    known.add(joined);
    return true;
  };

  const space = bytes[0x20];
  const newline = bytes[0x0a];
  if (space === undefined || newline === undefined) throw new Error("byteToUnicode must map all 256 bytes");
  const lower = "etaoinshrdlcumwfgypbvkjxqz".split("");
  const upper = lower.map((c) => c.toUpperCase());
  const digits = "0123456789".split("");
  // Ordered so that common pieces merge first: whitespace runs, space-prefixed letters, bigrams, trigrams.
  const groups: Array<() => void> = [
    () => {
      merge(space, space);
      merge(newline, newline);
      merge(space + space, space + space);
    },
    () => {
      for (const c of [...lower, ...upper, ...digits]) merge(space, c);
    },
    () => {
      for (const a of lower) for (const b of lower) merge(a, b);
    },
    () => {
      for (const a of lower) for (const b of lower) merge(space + a, b);
    },
    () => {
      for (const a of upper) for (const b of lower) merge(a, b);
    },
    () => {
      for (const a of lower) for (const b of lower) for (const c of lower) merge(a + b, c);
    },
    () => {
      for (const a of lower) for (const b of lower) for (const c of lower) merge(space + a + b, c);
    },
  ];
  for (const group of groups) group();

  const tokenTypes = tokens.map(() => TokenType.NORMAL);
  const specialIds: number[] = [];
  for (const special of SPECIAL_TOKENS) {
    specialIds.push(tokens.length);
    tokens.push(special);
    tokenTypes.push(TokenType.CONTROL);
  }
  // Short of the requested size (the merge groups ran out): pad with unused tokens llama.cpp never emits.
  while (tokens.length < size) {
    specialIds.push(tokens.length);
    tokens.push(`<|unused_${tokens.length}|>`);
    tokenTypes.push(TokenType.UNUSED);
  }
  const rawByteIds: number[] = [];
  for (let b = 0; b < 256; b++) if (b !== 0x0a && (b < 0x20 || b > 0x7e)) rawByteIds.push(b);
  return { tokens, tokenTypes, merges, specialIds, rawByteIds };
}

/** The `tokenizer.*` metadata of the project's own tokenizer. */
export function ownTokenizerMetadata(vocab: BuiltVocab): Map<string, GgufValue> {
  const id = (t: string) => vocab.tokens.indexOf(t);
  return new Map<string, GgufValue>([
    ["tokenizer.ggml.model", { type: GgufType.STRING, value: "gpt2" }],
    ["tokenizer.ggml.pre", { type: GgufType.STRING, value: "gpt-2" }],
    ["tokenizer.ggml.tokens", { type: GgufType.ARRAY, itemType: GgufType.STRING, items: vocab.tokens }],
    ["tokenizer.ggml.token_type", { type: GgufType.ARRAY, itemType: GgufType.INT32, items: vocab.tokenTypes }],
    ["tokenizer.ggml.merges", { type: GgufType.ARRAY, itemType: GgufType.STRING, items: vocab.merges }],
    ["tokenizer.ggml.bos_token_id", { type: GgufType.UINT32, value: id("<|endoftext|>") }],
    ["tokenizer.ggml.eos_token_id", { type: GgufType.UINT32, value: id("<|im_end|>") }],
    ["tokenizer.ggml.eot_token_id", { type: GgufType.UINT32, value: id("<|im_end|>") }],
    ["tokenizer.ggml.padding_token_id", { type: GgufType.UINT32, value: id("<|endoftext|>") }],
    ["tokenizer.ggml.add_bos_token", { type: GgufType.BOOL, value: false }],
    ["tokenizer.chat_template", { type: GgufType.STRING, value: CHATML_TEMPLATE }],
  ]);
}
