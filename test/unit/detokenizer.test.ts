import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { IncrementalDetokenizer, type TokenTextSource } from "../../src/engines/llama/detokenizer.js";

/**
 * A model whose tokens are byte strings, decoded like llama.cpp's detokenizer output reaches JavaScript:
 * UTF-8, non-fatal, so an incomplete or invalid sequence becomes U+FFFD.
 */
class ByteVocab implements TokenTextSource {
  private readonly bytes = new Map<number, Uint8Array>();
  readonly calls: Array<{ tokens: number[]; lastTokens: number[] }> = [];
  private next = 1;

  /** Registers a token for these bytes (reusing the id of an identical one). */
  token(bytes: number[] | string): number {
    const b = typeof bytes === "string" ? new TextEncoder().encode(bytes) : Uint8Array.from(bytes);
    for (const [id, existing] of this.bytes) if (Buffer.compare(Buffer.from(existing), Buffer.from(b)) === 0) return id;
    const id = this.next++;
    this.bytes.set(id, b);
    return id;
  }

  concat(tokens: readonly number[]): Buffer {
    return Buffer.concat(
      tokens.map((t) => {
        const b = this.bytes.get(t);
        assert.ok(b, `unknown token ${t}`);
        return b;
      }),
    );
  }

  detokenize(tokens: readonly number[], _specialTokens?: boolean, lastTokens?: readonly number[]): string {
    this.calls.push({ tokens: [...tokens], lastTokens: [...(lastTokens ?? [])] });
    return new TextDecoder("utf-8", { fatal: false }).decode(this.concat(tokens));
  }
}

interface Streamed {
  /** What each push returned, then what flush returned. */
  pieces: string[];
  text: string;
}

function stream(vocab: ByteVocab, tokens: number[]): Streamed {
  const d = new IncrementalDetokenizer(vocab);
  const pieces = tokens.map((t) => d.push(t));
  pieces.push(d.flush());
  return { pieces, text: pieces.join("") };
}

const decodeAll = (vocab: ByteVocab, tokens: number[]) => new TextDecoder().decode(vocab.concat(tokens));
const byteTokens = (vocab: ByteVocab, s: string) => [...Buffer.from(s, "utf8")].map((b) => vocab.token([b]));

describe("IncrementalDetokenizer", () => {
  test("whole-character tokens come out at once", () => {
    const v = new ByteVocab();
    const tokens = ["Hel", "lo", ", ", "wörld", " 😀"].map((s) => v.token(s));
    const r = stream(v, tokens);
    assert.deepEqual(r.pieces, ["Hel", "lo", ", ", "wörld", " 😀", ""]);
  });

  test("a 4-byte emoji split over 4 byte tokens comes out whole, once, with the last byte", () => {
    const v = new ByteVocab();
    const tokens = [v.token("a"), ...byteTokens(v, "😀"), v.token("b")];
    assert.equal(tokens.length, 6);
    const r = stream(v, tokens);
    assert.deepEqual(r.pieces, ["a", "", "", "", "😀", "b", ""]);
  });

  test("a 2-byte character split over 2 byte tokens comes out whole, once", () => {
    const v = new ByteVocab();
    const tokens = [v.token("caf"), ...byteTokens(v, "é"), v.token("!")];
    const r = stream(v, tokens);
    assert.deepEqual(r.pieces, ["caf", "", "é", "!", ""]);
  });

  test("a 3-byte character split as 1 + 2 bytes", () => {
    const v = new ByteVocab();
    const [e2, x82, xac] = [...Buffer.from("€")];
    const tokens = [v.token([e2]), v.token([x82, xac])];
    assert.deepEqual(stream(v, tokens).pieces, ["", "€", ""]);
  });

  test("a token that completes one character and starts the next is held until the next completes", () => {
    const v = new ByteVocab();
    const b = [...Buffer.from("é😀")]; // c3 a9 f0 9f 98 80
    const tokens = [v.token([b[0]]), v.token([b[1], b[2]]), v.token([b[3], b[4]]), v.token([b[5]])];
    const r = stream(v, tokens);
    assert.equal(r.text, "é😀");
    for (const p of r.pieces) assert.ok(!p.includes("\uFFFD"), `no half character: ${JSON.stringify(r.pieces)}`);
  });

  test("no piece ever holds half a character; the pieces join to the decoding of all bytes", () => {
    const v = new ByteVocab();
    const text = "Grüße, 世界! 😀🦙 naïve — ok";
    const bytes = [...Buffer.from(text)];
    // Every byte its own token, then bytes in fixed-size groups that cut characters anywhere.
    for (const size of [1, 2, 3, 5]) {
      const tokens: number[] = [];
      for (let i = 0; i < bytes.length; i += size) tokens.push(v.token(bytes.slice(i, i + size)));
      const r = stream(v, tokens);
      assert.equal(r.text, text, `groups of ${size}`);
      assert.equal(r.text, decodeAll(v, tokens));
      for (const p of r.pieces) assert.ok(!p.includes("\uFFFD"), `groups of ${size}: ${JSON.stringify(r.pieces)}`);
    }
  });

  test("tokens that straddle character boundaries, four in a row, still decode to the text", () => {
    // Byte-level BPE vocabularies have tokens such as [0xad, 0xe6] (the end of one CJK character and the start
    // of the next). Cut 中文中文中 (3 bytes per character) into tokens of 2, 2, 3, 3 and 5 bytes: each of the
    // first four ends in the middle of a character, the last completes the text.
    const v = new ByteVocab();
    const text = "中文中文中";
    const bytes = [...Buffer.from(text)];
    const tokens: number[] = [];
    let at = 0;
    for (const size of [2, 2, 3, 3, 5]) {
      tokens.push(v.token(bytes.slice(at, at + size)));
      at += size;
    }
    assert.equal(at, bytes.length);
    const r = stream(v, tokens);
    assert.equal(r.text, text, `pieces: ${JSON.stringify(r.pieces)}`);
    for (const p of r.pieces) assert.ok(!p.includes("\uFFFD"), `no U+FFFD in valid text: ${JSON.stringify(r.pieces)}`);
  });

  test("an invalid byte run is flushed as U+FFFD instead of being held forever", () => {
    const v = new ByteVocab();
    const ff = v.token([0xff]);
    const d = new IncrementalDetokenizer(v);
    const pieces: string[] = [];
    for (let i = 0; i < 12; i++) pieces.push(d.push(ff));
    const out = pieces.join("") + d.flush();
    assert.equal(out, "\uFFFD".repeat(12));
    // Held at most a character's worth of tokens (4) at any time.
    let held = 0;
    for (const p of pieces) {
      held = p === "" ? held + 1 : 0;
      assert.ok(held < 4, `held ${held} tokens: ${JSON.stringify(pieces)}`);
    }
  });

  test("an incomplete lead byte followed by ASCII comes out as U+FFFD then the text", () => {
    const v = new ByteVocab();
    const tokens = [v.token([0xf0, 0x9f]), v.token("ok")];
    const r = stream(v, tokens);
    assert.deepEqual(r.pieces, ["", "\uFFFDok", ""]);
  });

  test("flush at the end returns an incomplete character as U+FFFD, then nothing", () => {
    const v = new ByteVocab();
    const d = new IncrementalDetokenizer(v);
    assert.equal(d.push(v.token("x")), "x");
    assert.equal(d.push(v.token([0xf0])), "");
    assert.equal(d.push(v.token([0x9f])), "");
    assert.equal(d.flush(), "\uFFFD");
    assert.equal(d.flush(), "");
  });

  test("flush with nothing held returns the empty string", () => {
    const v = new ByteVocab();
    const d = new IncrementalDetokenizer(v);
    assert.equal(d.flush(), "");
    assert.equal(d.push(v.token("abc")), "abc");
    assert.equal(d.flush(), "");
  });

  test("the tokens before the pending ones are passed as context (at most 4), the pending ones are not", () => {
    const v = new ByteVocab();
    const ids = ["a", "b", "c", "d", "e", "f"].map((s) => v.token(s));
    const d = new IncrementalDetokenizer(v);
    for (const id of ids) d.push(id);
    assert.deepEqual(
      v.calls.map((c) => c.tokens),
      ids.map((id) => [id]),
    );
    assert.deepEqual(v.calls[0].lastTokens, []);
    assert.deepEqual(v.calls[1].lastTokens, ids.slice(0, 1));
    assert.deepEqual(v.calls[5].lastTokens, ids.slice(1, 5));
  });
});
