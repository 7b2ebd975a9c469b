import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { base62, secretBase62 } from "../../src/core/ids.js";

describe("random ids", () => {
  test("base62: the asked length, only base62 characters, no repeats, across many pool refills", () => {
    const seen = new Set<string>();
    for (let i = 0; i < 20_000; i++) {
      const id = base62(20);
      assert.match(id, /^[0-9A-Za-z]{20}$/);
      seen.add(id);
    }
    assert.equal(seen.size, 20_000);
  });

  test("base62: every character about equally likely (rejection sampling, no modulo bias)", () => {
    const counts = new Map<string, number>();
    const text = base62(620_000);
    for (const c of text) counts.set(c, (counts.get(c) ?? 0) + 1);
    assert.equal(counts.size, 62);
    for (const [c, n] of counts) assert.ok(Math.abs(n - 10_000) < 600, `${c}: ${n} of an expected 10,000`);
  });

  test("secretBase62 (API keys): its own bytes, the same alphabet and length", () => {
    const keys = new Set(Array.from({ length: 2_000 }, () => secretBase62(43)));
    assert.equal(keys.size, 2_000);
    for (const k of keys) assert.match(k, /^[0-9A-Za-z]{43}$/);
  });
});
