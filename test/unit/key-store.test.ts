import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { parseKeyRequest } from "../../src/keys/admin-ops.js";
import { KeyStore } from "../../src/keys/store.js";

const dir = () => mkdtempSync(join(tmpdir(), "lucena-store-"));

describe("KeyStore", () => {
  test("a created key verifies with its limits and models; its hash, not the key, is stored", () => {
    const store = new KeyStore(dir());
    const { key, info } = store.create({ name: "a", rpm: 5, models: ["m1"] });
    assert.match(key, /^sk-lucena-[A-Za-z0-9]{43}$/);
    assert.equal(info.prefix, key.slice(0, 14));
    assert.deepEqual(store.verify(key), {
      keyId: info.id,
      limits: { rpm: 5, tpm: null, concurrency: null },
      models: ["m1"],
    });
    assert.equal(store.verify(key.slice(0, -1) + (key.endsWith("a") ? "b" : "a")), null);
    assert.equal(store.verify("sk-other"), null);
    store.close();
  });

  test("revocation by another connection is seen on the next verification", () => {
    const d = dir();
    const a = new KeyStore(d);
    const b = new KeyStore(d);
    const { key, info } = a.create({ name: "shared" });
    assert.ok(b.verify(key), "b caches the key");
    assert.equal(a.revoke(info.id), true);
    assert.equal(a.revoke(info.id), false, "already revoked");
    assert.equal(b.verify(key), null);
    a.close();
    b.close();
  });

  test("an expired key does not verify", () => {
    const store = new KeyStore(dir());
    const { key } = store.create({ name: "old", expiresInMs: -1 });
    assert.equal(store.verify(key), null);
    store.close();
  });

  test("the first key is made once, even by two stores on one directory", () => {
    const d = dir();
    const a = new KeyStore(d);
    const b = new KeyStore(d);
    assert.ok(a.createFirstKey());
    assert.equal(b.createFirstKey(), null);
    assert.equal(a.list().length, 1);
    a.close();
    b.close();
  });

  test("usage sums per key", () => {
    const store = new KeyStore(dir());
    const row = {
      requestId: "r",
      model: "m",
      status: 200,
      finishReason: "stop",
      ttftMs: 1,
      durationMs: 2,
      stream: false,
    };
    store.recordUsage({ ...row, keyId: "k1", promptTokens: 10, completionTokens: 5 });
    store.recordUsage({ ...row, keyId: "k1", promptTokens: 1, completionTokens: 2 });
    store.recordUsage({ ...row, keyId: "k2", promptTokens: 7, completionTokens: 0 });
    assert.deepEqual(store.usage("k1"), [
      { keyId: "k1", requests: 2, promptTokens: 11, completionTokens: 7, totalTokens: 18, inProgress: 0 },
    ]);
    assert.deepEqual(
      store.usage().map((u) => u.keyId),
      ["k1", "k2"],
    );
    assert.deepEqual(store.usage("none"), [
      { keyId: "none", requests: 0, promptTokens: 0, completionTokens: 0, totalTokens: 0, inProgress: 0 },
    ]);
    store.close();
  });
});

describe("parseKeyRequest", () => {
  test("reads durations, limits and model lists from the CLI's strings or JSON", () => {
    assert.deepEqual(parseKeyRequest({ name: " x ", rpm: "5", expires: "2h", models: "a, b" }), {
      name: "x",
      rpm: 5,
      tpm: null,
      concurrency: null,
      expiresInMs: 7_200_000,
      models: ["a", "b"],
    });
    for (const [field, value] of [
      ["rpm", 0],
      ["tpm", 1.5],
      ["concurrency", "x"],
      ["expires", "soon"],
      ["expires", "90"], // a bare number would be 90 milliseconds: a unit is required
      ["expires", 90],
      ["models", []],
      ["name", ""],
    ] as const) {
      assert.throws(
        () => parseKeyRequest({ name: "n", [field]: value }),
        (e: Error & { param?: string }) => e.param === field,
      );
    }
  });
});
