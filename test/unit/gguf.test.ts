import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getLlama, readGgufFileInfo } from "node-llama-cpp";
import { GgmlType, GgufType, TokenType, fromHalf, toHalf, type GgufValue } from "../../src/gguf/format.js";
import { MODEL_SHAPES, TRAIN_CONTEXT, makeModel } from "../../src/gguf/model-maker.js";
import { readGgufMetadata } from "../../src/gguf/reader.js";
import { SPECIAL_TOKENS, buildByteBpeVocab } from "../../src/gguf/tokenizer.js";
import { writeGguf } from "../../src/gguf/writer.js";

const dir = mkdtempSync(join(tmpdir(), "lucena-gguf-test-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** The float32 nearest to x (toHalf takes binary32 input, as ggml's fp32→fp16 does). */
const f32 = (x: number) => Math.fround(x);

describe("toHalf / fromHalf", () => {
  const cases: Array<[number, number]> = [
    [0, 0x0000],
    [1, 0x3c00],
    [-1, 0xbc00],
    [-2.5, 0xc100],
    [0.5, 0x3800],
    [65504, 0x7bff], // largest finite half
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [1023 * 2 ** -24, 0x03ff], // largest subnormal
    [3 * 2 ** -24, 0x0003],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
  ];

  test("representative values encode to their known bits and decode back exactly", () => {
    for (const [value, bits] of cases) {
      assert.equal(toHalf(value), bits, `toHalf(${value})`);
      assert.equal(fromHalf(bits), value, `fromHalf(0x${bits.toString(16)})`);
    }
  });

  test("signed zeros keep their sign", () => {
    assert.equal(toHalf(-0), 0x8000);
    assert.ok(Object.is(fromHalf(0x8000), -0));
    assert.ok(Object.is(fromHalf(0x0000), 0));
  });

  test("NaN stays NaN", () => {
    const h = toHalf(NaN);
    assert.equal(h & 0x7c00, 0x7c00);
    assert.notEqual(h & 0x3ff, 0);
    assert.ok(Number.isNaN(fromHalf(h)));
  });

  test("every finite half value round-trips through fromHalf → toHalf", () => {
    for (let bits = 0; bits < 0x10000; bits++) {
      const value = fromHalf(bits);
      if (Number.isNaN(value)) continue;
      if (toHalf(value) !== bits) assert.fail(`0x${bits.toString(16)} → ${value} → 0x${toHalf(value).toString(16)}`);
    }
  });

  test("rounds to nearest, ties to even, among normals", () => {
    const ulp = 2 ** -10; // spacing of halves in [1, 2)
    assert.equal(toHalf(1 + ulp / 2), 0x3c00, "tie between 0x3c00 and 0x3c01 goes to even 0x3c00");
    assert.equal(toHalf(1 + (3 * ulp) / 2), 0x3c02, "tie between 0x3c01 and 0x3c02 goes to even 0x3c02");
    assert.equal(toHalf(f32(1 + ulp / 2 + 2 ** -20)), 0x3c01, "just above the tie rounds up");
    assert.equal(toHalf(f32(1 + ulp / 2 - 2 ** -20)), 0x3c00, "just below the tie rounds down");
    assert.equal(toHalf(f32(2 - ulp / 4)), 0x4000, "rounding up carries into the exponent");
    assert.equal(toHalf(65504 + 8), 0x7bff, "below the tie with 65536 stays finite");
    assert.equal(toHalf(65504 + 16), 0x7c00, "the tie above the largest half goes to even: infinity");
    assert.equal(toHalf(1e6), 0x7c00, "overflow is infinity");
    assert.equal(toHalf(-1e6), 0xfc00);
  });

  test("rounds to nearest, ties to even, among subnormals and at the bottom", () => {
    const s = 2 ** -24; // smallest subnormal
    assert.equal(toHalf(s / 2), 0x0000, "half the smallest subnormal ties to even zero");
    assert.equal(toHalf(f32(s / 2 + 2 ** -40)), 0x0001, "just above half rounds up");
    assert.equal(toHalf(0.75 * s), 0x0001);
    assert.equal(toHalf(0.25 * s), 0x0000);
    assert.equal(toHalf(2 ** -30), 0x0000, "far below the range is zero");
    assert.equal(toHalf(-(2 ** -30)), 0x8000, "and keeps its sign");
    assert.equal(toHalf(1.5 * s), 0x0002, "tie between 1 and 2 goes to even 2");
    assert.equal(toHalf(2.5 * s), 0x0002, "tie between 2 and 3 goes to even 2");
    assert.equal(toHalf(1023.5 * s), 0x0400, "the largest subnormal rounds up into the smallest normal");
    assert.equal(toHalf(-3 * s), 0x8003);
  });

  test("values between halves decode within half an ulp", () => {
    for (const x of [0.1, -0.3, 3.14159, 1234.567, 1e-5, -6e-8, 0.333]) {
      const y = fromHalf(toHalf(f32(x)));
      const e = Math.floor(Math.log2(Math.abs(x)));
      const ulp = 2 ** Math.max(e - 10, -24);
      assert.ok(Math.abs(y - x) <= ulp / 2, `${x} → ${y}`);
    }
  });
});

describe("writeGguf / readGgufMetadata", () => {
  const metadata = new Map<string, GgufValue>([
    ["t.u8", { type: GgufType.UINT8, value: 250 }],
    ["t.i8", { type: GgufType.INT8, value: -120 }],
    ["t.u16", { type: GgufType.UINT16, value: 65000 }],
    ["t.i16", { type: GgufType.INT16, value: -32000 }],
    ["t.u32", { type: GgufType.UINT32, value: 4_000_000_000 }],
    ["t.i32", { type: GgufType.INT32, value: -2_000_000_000 }],
    ["t.f32", { type: GgufType.FLOAT32, value: 1.5 }],
    ["t.bool.true", { type: GgufType.BOOL, value: true }],
    ["t.bool.false", { type: GgufType.BOOL, value: false }],
    ["t.str", { type: GgufType.STRING, value: "héllo ✓ 🦙\n{{ jinja }}" }],
    ["t.str.empty", { type: GgufType.STRING, value: "" }],
    ["t.u64", { type: GgufType.UINT64, value: 2n ** 64n - 1n }],
    ["t.i64", { type: GgufType.INT64, value: -(2n ** 63n) }],
    ["t.f64", { type: GgufType.FLOAT64, value: Math.PI }],
    ["a.str", { type: GgufType.ARRAY, itemType: GgufType.STRING, items: ["a", "", "ü😀", "Ġthe", "a b"] }],
    ["a.u64", { type: GgufType.ARRAY, itemType: GgufType.UINT64, items: [0n, 1n, 2n ** 40n, 2n ** 64n - 1n] }],
    ["a.i64", { type: GgufType.ARRAY, itemType: GgufType.INT64, items: [-1n, 2n ** 62n] }],
    ["a.i32", { type: GgufType.ARRAY, itemType: GgufType.INT32, items: [1, -1, 3, 6] }],
    ["a.u32", { type: GgufType.ARRAY, itemType: GgufType.UINT32, items: [0, 4_294_967_295] }],
    ["a.f32", { type: GgufType.ARRAY, itemType: GgufType.FLOAT32, items: [0.25, -1e10, 3] }],
    ["a.f64", { type: GgufType.ARRAY, itemType: GgufType.FLOAT64, items: [0.1, -0] }],
    ["a.bool", { type: GgufType.ARRAY, itemType: GgufType.BOOL, items: [true, false, true] }],
    ["a.u8", { type: GgufType.ARRAY, itemType: GgufType.UINT8, items: [0, 255] }],
    ["a.i8", { type: GgufType.ARRAY, itemType: GgufType.INT8, items: [-128, 127] }],
    ["a.u16", { type: GgufType.ARRAY, itemType: GgufType.UINT16, items: [0, 65535] }],
    ["a.i16", { type: GgufType.ARRAY, itemType: GgufType.INT16, items: [-32768, 32767] }],
    ["a.empty", { type: GgufType.ARRAY, itemType: GgufType.STRING, items: [] }],
  ]);

  test("every metadata type round-trips with its exact GGUF type, in order", () => {
    const path = join(dir, "meta.gguf");
    const { bytes } = writeGguf(path, metadata, []);
    assert.equal(statSync(path).size, bytes);
    assert.equal(existsSync(`${path}.partial`), false, "no partial file is left behind");
    const back = readGgufMetadata(path);
    assert.deepEqual([...back.keys()], [...metadata.keys()]);
    for (const [key, value] of metadata) assert.deepEqual(back.get(key), value, key);
  });

  test("64-bit values given as numbers come back as bigints of the same value", () => {
    const path = join(dir, "meta-numbers.gguf");
    writeGguf(
      path,
      new Map<string, GgufValue>([
        ["u64", { type: GgufType.UINT64, value: 123456789 }],
        ["i64", { type: GgufType.INT64, value: -5 }],
        ["a", { type: GgufType.ARRAY, itemType: GgufType.UINT64, items: [7, 2 ** 40] }],
      ]),
      [],
    );
    const back = readGgufMetadata(path);
    assert.deepEqual(back.get("u64"), { type: GgufType.UINT64, value: 123456789n });
    assert.deepEqual(back.get("i64"), { type: GgufType.INT64, value: -5n });
    assert.deepEqual(back.get("a"), { type: GgufType.ARRAY, itemType: GgufType.UINT64, items: [7n, 2n ** 40n] });
  });

  test("node-llama-cpp's own reader agrees on metadata and tensors, and the tensor data is where it says", async () => {
    const path = join(dir, "tensors.gguf");
    const meta = new Map<string, GgufValue>([
      ["general.architecture", { type: GgufType.STRING, value: "llama" }],
      ["general.name", { type: GgufType.STRING, value: "writer test" }],
      ["x.list", { type: GgufType.ARRAY, itemType: GgufType.STRING, items: ["p", "q"] }],
    ]);
    const q8Row = (row: number, out: Float32Array) => {
      for (let i = 0; i < out.length; i++) out[i] = (i - 16) * (row + 1) * 0.5;
    };
    writeGguf(path, meta, [
      {
        name: "a.f32",
        shape: [3, 2],
        type: GgmlType.F32,
        fillRow: (row, out) => out.set([row * 10, row * 10 + 1, row * 10 + 2]),
      },
      { name: "b.f16", shape: [5], type: GgmlType.F16, fillRow: (_row, out) => out.set([0.5, -2.5, 1, 65504, 0]) },
      { name: "c.q8", shape: [32, 2], type: GgmlType.Q8_0, fillRow: q8Row },
    ]);
    const info = await readGgufFileInfo(path, { logWarnings: false });
    assert.equal(info.version, 3);
    assert.equal(info.metadata.general.architecture, "llama");
    assert.equal(info.metadata.general.name, "writer test");
    const tensors = info.fullTensorInfo ?? info.tensorInfo ?? [];
    assert.deepEqual(
      tensors.map((t) => [t.name, t.dimensions.map(Number), t.ggmlType]),
      [
        ["a.f32", [3, 2], GgmlType.F32],
        ["b.f16", [5], GgmlType.F16],
        ["c.q8", [32, 2], GgmlType.Q8_0],
      ],
    );
    const file = readFileSync(path);
    const at = (i: number) => Number(tensors[i].fileOffset);
    for (const t of tensors) assert.equal(Number(t.fileOffset) % 32, 0, `${t.name} is aligned`);
    // F32, row after row.
    const a = Array.from({ length: 6 }, (_, i) => file.readFloatLE(at(0) + i * 4));
    assert.deepEqual(a, [0, 1, 2, 10, 11, 12]);
    // F16.
    const b = Array.from({ length: 5 }, (_, i) => fromHalf(file.readUInt16LE(at(1) + i * 2)));
    assert.deepEqual(b, [0.5, -2.5, 1, 65504, 0]);
    // Q8_0: per block of 32, an f16 scale then 32 int8; dequantized values are close to the originals.
    for (let row = 0; row < 2; row++) {
      const base = at(2) + row * 34;
      const d = fromHalf(file.readUInt16LE(base));
      const expected = new Float32Array(32);
      q8Row(row, expected);
      const amax = Math.max(...expected.map(Math.abs));
      assert.ok(Math.abs(d - amax / 127) <= (amax / 127) * 1e-3, `row ${row} scale ${d}`);
      for (let i = 0; i < 32; i++) {
        const q = file.readInt8(base + 2 + i);
        assert.ok(Math.abs(q * d - expected[i]) <= d * 0.51 + 1e-6, `row ${row} [${i}]: ${q * d} vs ${expected[i]}`);
      }
    }
  });

  test("the reader refuses a file that is not GGUF", () => {
    const path = join(dir, "not.gguf");
    writeFileSync(path, Buffer.alloc(64, 1));
    assert.throws(() => readGgufMetadata(path), /not a GGUF file/);
  });
});

describe("buildByteBpeVocab", () => {
  for (const size of [259, 300, 2048, 32000, 50000]) {
    test(`size ${size}: exactly ${size} distinct tokens with consistent types and merges`, () => {
      const v = buildByteBpeVocab(size);
      assert.equal(v.tokens.length, size);
      assert.equal(v.tokenTypes.length, size);
      assert.equal(new Set(v.tokens).size, size, "tokens are distinct");

      const index = new Map(v.tokens.map((t, i) => [t, i]));
      // Each merge joins two tokens that exist before it (bytes, or tokens made by earlier merges) into a token
      // that exists.
      const available = new Set(v.tokens.slice(0, 256));
      v.merges.forEach((merge, rank) => {
        const parts = merge.split(" ");
        assert.equal(parts.length, 2, `merge ${rank} "${merge}" has two parts`);
        const [a, b] = parts;
        assert.ok(available.has(a), `merge ${rank}: left part "${a}" exists before it`);
        assert.ok(available.has(b), `merge ${rank}: right part "${b}" exists before it`);
        const joined = index.get(a + b);
        assert.ok(joined !== undefined, `merge ${rank}: "${a + b}" is a token`);
        assert.ok(
          joined > index.get(a)! && joined > index.get(b)!,
          `merge ${rank}: the merged token comes after its parts`,
        );
        available.add(a + b);
      });
      assert.equal(new Set(v.merges).size, v.merges.length, "no merge twice");
      // Every non-byte, non-special token is made by exactly one merge.
      const normal = v.tokens.filter((_, i) => v.tokenTypes[i] === TokenType.NORMAL);
      assert.equal(normal.length, 256 + v.merges.length);

      // The special tokens are CONTROL tokens, listed in specialIds with everything else that is not NORMAL.
      for (const special of SPECIAL_TOKENS) {
        const id = index.get(special);
        assert.ok(id !== undefined, `${special} is in the vocabulary`);
        assert.equal(v.tokenTypes[id], TokenType.CONTROL, `${special} is CONTROL`);
        assert.ok(v.specialIds.includes(id));
      }
      const notNormal = v.tokenTypes.flatMap((t, i) => (t === TokenType.NORMAL ? [] : [i]));
      assert.deepEqual(
        [...v.specialIds].sort((x, y) => x - y),
        notNormal,
      );
      for (const id of notNormal) assert.ok([TokenType.CONTROL, TokenType.UNUSED].includes(v.tokenTypes[id]));
    });
  }

  test("the first 256 tokens are GPT-2's byte map", () => {
    const v = buildByteBpeVocab(2048);
    assert.equal(v.tokens[0x41], "A");
    assert.equal(v.tokens[0x20], "Ġ");
    assert.equal(v.tokens[0x0a], "Ċ");
    assert.equal(new Set(v.tokens.slice(0, 256).map((t) => [...t].length)).size, 1, "one character per byte");
  });

  test("rawByteIds: every byte outside printable ASCII except newline", () => {
    const v = buildByteBpeVocab(2048);
    assert.equal(v.rawByteIds.length, 256 - 95 - 1);
    assert.ok(!v.rawByteIds.includes(0x0a));
    assert.ok(!v.rawByteIds.includes(0x20));
    assert.ok(!v.rawByteIds.includes(0x7e));
    assert.ok(v.rawByteIds.includes(0x7f));
    assert.ok(v.rawByteIds.includes(0xc3));
    assert.ok(v.rawByteIds.includes(0x09));
  });

  test("too small a size is refused", () => {
    assert.throws(() => buildByteBpeVocab(258));
  });

  test("deterministic", () => {
    assert.deepEqual(buildByteBpeVocab(4000), buildByteBpeVocab(4000));
  });
});

describe("makeModel", () => {
  const tiny = MODEL_SHAPES.tiny;
  const path1 = join(dir, "tiny-a.gguf");
  const path2 = join(dir, "tiny-b.gguf");
  const path3 = join(dir, "tiny-c.gguf");

  test("tiny: metadata carries the llama architecture, the shape and the tokenizer", () => {
    const made = makeModel({ out: path1, size: "tiny", seed: 42 });
    assert.equal(made.path, path1);
    assert.equal(made.vocabSize, tiny.vocab);
    assert.equal(statSync(path1).size, made.bytes);
    const meta = readGgufMetadata(path1);
    const value = (key: string) => {
      const v = meta.get(key);
      assert.ok(v && v.type !== GgufType.ARRAY, `${key} is a scalar`);
      return v.value;
    };
    assert.equal(value("general.architecture"), "llama");
    assert.equal(value("llama.embedding_length"), tiny.embd);
    assert.equal(value("llama.block_count"), tiny.layers);
    assert.equal(value("llama.attention.head_count"), tiny.heads);
    assert.equal(value("llama.attention.head_count_kv"), tiny.kvHeads);
    assert.equal(value("llama.feed_forward_length"), tiny.ff);
    assert.equal(value("llama.vocab_size"), tiny.vocab);
    assert.equal(value("llama.rope.dimension_count"), tiny.embd / tiny.heads);
    assert.equal(value("llama.context_length"), TRAIN_CONTEXT);
    assert.equal(value("tokenizer.ggml.model"), "gpt2");
    assert.equal(typeof value("tokenizer.chat_template"), "string");
    const tokens = meta.get("tokenizer.ggml.tokens");
    assert.ok(tokens?.type === GgufType.ARRAY && tokens.itemType === GgufType.STRING);
    assert.equal(tokens.items.length, tiny.vocab);
    const types = meta.get("tokenizer.ggml.token_type");
    assert.ok(types?.type === GgufType.ARRAY);
    assert.equal(types.items.length, tiny.vocab);
    const merges = meta.get("tokenizer.ggml.merges");
    assert.ok(merges?.type === GgufType.ARRAY && merges.items.length > 0);
    for (const key of ["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"]) {
      const id = Number(value(key));
      assert.equal(types.items[id], TokenType.CONTROL, `${key} names a control token`);
    }
  });

  test("deterministic for a seed, different for another seed", () => {
    if (!existsSync(path1)) makeModel({ out: path1, size: "tiny", seed: 42 });
    makeModel({ out: path2, size: "tiny", seed: 42 });
    makeModel({ out: path3, size: "tiny", seed: 43 });
    const a = readFileSync(path1);
    const b = readFileSync(path2);
    const c = readFileSync(path3);
    assert.ok(a.equals(b), "same seed, same bytes");
    assert.equal(c.length, a.length, "another seed, same layout");
    assert.ok(!a.equals(c), "another seed, other weights");
  });

  test("node-llama-cpp loads the tiny model; tokenize/detokenize round-trips ASCII text", async () => {
    if (!existsSync(path1)) makeModel({ out: path1, size: "tiny", seed: 42 });
    const llama = await getLlama({ gpu: false });
    try {
      const model = await llama.loadModel({ modelPath: path1 });
      try {
        assert.equal(model.trainContextSize, TRAIN_CONTEXT);
        for (const text of [
          "Hello, world!",
          "The quick brown fox jumps over the lazy dog.",
          "  leading spaces and trailing  ",
          "line one\nline two\n\n\ttabbed {json: [1, 2, 3]} ~!@#$%^&*()_+`-=",
          "x",
        ]) {
          const tokens = model.tokenize(text);
          assert.ok(
            tokens.length > 0 && tokens.length <= text.length,
            `${JSON.stringify(text)}: ${tokens.length} tokens`,
          );
          assert.equal(model.detokenize(tokens), text);
        }
        // Merges are used: English takes far fewer tokens than bytes (the tiny vocabulary has bigram merges).
        const sentence = "the quick brown fox jumps over the lazy dog and then some more words";
        const n = model.tokenize(sentence).length;
        assert.ok(n < sentence.length * 0.6, `merges shorten English text: ${n} tokens for ${sentence.length} bytes`);
        // The chat template's special tokens are single control tokens.
        const imStart = model.tokenize("<|im_start|>", true);
        assert.equal(imStart.length, 1);
        assert.equal(model.detokenize(imStart, true), "<|im_start|>");
        assert.notDeepEqual(model.tokenize("<|im_start|>", false), imStart, "not parsed as special without asking");
      } finally {
        await model.dispose();
      }
    } finally {
      await llama.dispose();
    }
  });
});
