import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { RateLimiter } from "../../src/keys/limiter.js";
import type { Principal } from "../../src/server/auth.js";
import { ApiError } from "../../src/server/errors.js";

const key = (limits: Partial<Principal["limits"]>, keyId = "k"): Principal => ({
  keyId,
  limits: { rpm: null, tpm: null, concurrency: null, ...limits },
  models: null,
});

function refused(fn: () => unknown): ApiError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ApiError);
    assert.equal(err.status, 429);
    assert.equal(err.type, "rate_limit_error");
    return err;
  }
  assert.fail("expected a 429");
}

describe("RateLimiter", () => {
  test("requests per minute slide with the window", () => {
    const l = new RateLimiter();
    const p = key({ rpm: 2 });
    l.admit(p, 0, 0).settle(0);
    l.admit(p, 0, 10_000).settle(0);
    const err = refused(() => l.admit(p, 0, 30_000));
    assert.equal(err.headers["retry-after"], "30", "the oldest request leaves the window at 60 s");
    assert.equal(err.headers["x-ratelimit-remaining-requests"], "0");
    l.admit(p, 0, 60_001).settle(0); // the first one has left the window
    refused(() => l.admit(p, 0, 60_002));
  });

  test("tokens are reserved at admission and settled to the real count", () => {
    const l = new RateLimiter();
    const p = key({ tpm: 100 });
    const a = l.admit(p, 80, 0);
    assert.equal(a.headers["x-ratelimit-remaining-tokens"], "20");
    refused(() => l.admit(p, 30, 1));
    a.settle(50);
    const b = l.admit(p, 30, 2);
    assert.equal(b.headers["x-ratelimit-remaining-tokens"], "20");
  });

  test("a request larger than the whole token limit says so", () => {
    const err = refused(() => new RateLimiter().admit(key({ tpm: 100 }), 101, 0));
    assert.match(err.message, /above this key's limit of 100 tokens per minute/);
  });

  test("concurrency counts requests until they settle or cancel", () => {
    const l = new RateLimiter();
    const p = key({ concurrency: 1 });
    const a = l.admit(p, 0, 0);
    refused(() => l.admit(p, 0, 1));
    a.settle(0);
    const b = l.admit(p, 0, 2);
    b.cancel();
    l.admit(p, 0, 3);
  });

  test("a cancelled admission spends nothing; settle and cancel count once", () => {
    const l = new RateLimiter();
    const p = key({ rpm: 1, tpm: 10 });
    const a = l.admit(p, 10, 0);
    a.cancel();
    a.cancel();
    a.settle(10);
    const b = l.admit(p, 10, 1);
    assert.equal(b.headers["x-ratelimit-remaining-requests"], "0");
  });

  test("keys are limited separately; no limits means no headers", () => {
    const l = new RateLimiter();
    l.admit(key({ rpm: 1 }, "a"), 0, 0);
    l.admit(key({ rpm: 1 }, "b"), 0, 0);
    assert.deepEqual(l.admit(key({}, "c"), 1_000_000, 0).headers, {});
  });
});
