import assert from "node:assert/strict";
import { asHttp } from "../helpers/errors.js";
import { describe, test } from "node:test";
import { RateLimiter } from "../../src/keys/limiter.js";
import type { Principal } from "../../src/core/principal.js";
import { LucenaError } from "../../src/core/errors.js";

const key = (limits: Partial<Principal["limits"]>, keyId = "k"): Principal => ({
  keyId,
  limits: { rpm: null, tpm: null, concurrency: null, ...limits },
  models: null,
});

function refused(fn: () => unknown): LucenaError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof LucenaError);
    assert.equal(asHttp(err).status, 429);
    assert.equal(asHttp(err).type, "rate_limit_error");
    return err;
  }
  assert.fail("expected a 429");
}

/** Admits a completion and reserves its tokens, as the chat route does. */
function admit(l: RateLimiter, p: Principal, tokens: number, now: number) {
  const a = l.admit(p, now);
  a.reserve(tokens, now);
  return a;
}

describe("RateLimiter", () => {
  test("requests per minute slide with the window", () => {
    const l = new RateLimiter();
    const p = key({ rpm: 2 });
    admit(l, p, 0, 0).settle(0);
    admit(l, p, 0, 10_000).settle(0);
    const err = refused(() => l.admit(p, 30_000));
    assert.equal(asHttp(err).headers["retry-after"], "30", "the oldest request leaves the window at 60 s");
    assert.equal(asHttp(err).headers["x-ratelimit-remaining-requests"], "0");
    admit(l, p, 0, 60_001).settle(0); // the first one has left the window
    refused(() => l.admit(p, 60_002));
  });

  test("tokens are reserved once the prompt is known and settled to the real count", () => {
    const l = new RateLimiter();
    const p = key({ tpm: 100 });
    const a = admit(l, p, 80, 0);
    assert.equal(a.headers["x-ratelimit-remaining-tokens"], "20");
    const b = l.admit(p, 1);
    refused(() => b.reserve(30, 1));
    a.settle(50);
    const c = admit(l, p, 30, 2);
    assert.equal(c.headers["x-ratelimit-remaining-tokens"], "20");
  });

  test("a request larger than the whole token limit says so", () => {
    const err = refused(() => admit(new RateLimiter(), key({ tpm: 100 }), 101, 0));
    assert.match(err.message, /above this key's limit of 100 tokens per minute/);
  });

  test("a request refused for its tokens spends nothing: neither a request nor a concurrency slot", () => {
    const l = new RateLimiter();
    const p = key({ rpm: 1, tpm: 100, concurrency: 1 });
    refused(() => admit(l, p, 101, 0));
    const a = admit(l, p, 100, 1);
    assert.equal(a.headers["x-ratelimit-remaining-requests"], "0");
  });

  test("concurrency counts requests until they settle or cancel", () => {
    const l = new RateLimiter();
    const p = key({ concurrency: 1 });
    const a = admit(l, p, 0, 0);
    refused(() => l.admit(p, 1));
    a.settle(0);
    const b = admit(l, p, 0, 2);
    b.cancel();
    admit(l, p, 0, 3);
  });

  test("a 429 for concurrency says which limit was hit, in headers of its own", () => {
    const l = new RateLimiter();
    const p = key({ concurrency: 2, rpm: 100 });
    const a = admit(l, p, 0, 0);
    assert.equal(a.headers["x-ratelimit-limit-concurrency"], "2");
    assert.equal(a.headers["x-ratelimit-remaining-concurrency"], "1");
    admit(l, p, 0, 0);
    const err = refused(() => l.admit(p, 1));
    assert.match(err.message, /at once/);
    assert.equal(asHttp(err).headers["x-ratelimit-limit-concurrency"], "2");
    assert.equal(asHttp(err).headers["x-ratelimit-remaining-concurrency"], "0");
    assert.equal(asHttp(err).headers["x-ratelimit-remaining-requests"], "98", "the requests limit is not the one hit");
    assert.equal(asHttp(err).headers["retry-after"], "1");
  });

  test("a cancelled admission spends nothing; settle and cancel count once", () => {
    const l = new RateLimiter();
    const p = key({ rpm: 1, tpm: 10 });
    const a = admit(l, p, 10, 0);
    a.cancel();
    a.cancel();
    a.settle(10);
    const b = admit(l, p, 10, 1);
    assert.equal(b.headers["x-ratelimit-remaining-requests"], "0");
  });

  test("keys are limited separately; no limits means no headers", () => {
    const l = new RateLimiter();
    admit(l, key({ rpm: 1 }, "a"), 0, 0);
    admit(l, key({ rpm: 1 }, "b"), 0, 0);
    assert.deepEqual(admit(l, key({}, "c"), 1_000_000, 0).headers, {});
  });

  test("settling after the request's second has left the window changes nothing", () => {
    const l = new RateLimiter();
    const p = key({ tpm: 100 });
    const a = admit(l, p, 90, 0);
    admit(l, p, 0, 61_000).settle(0); // the window has moved past the first request's second
    a.settle(90);
    assert.equal(admit(l, p, 100, 61_001).headers["x-ratelimit-remaining-tokens"], "0");
  });

  test("the work of an admission does not grow with the traffic of the minute", () => {
    // 200,000 admissions within one minute, then one more: the old limiter summed every admission of the minute
    // on each call; this one keeps a total per one-second slot. Counted as calls, never timed.
    const l = new RateLimiter();
    const p = key({ tpm: 1e12 });
    for (let i = 0; i < 200_000; i++) admit(l, p, 1, i % 60_000).settle(1);
    const state = (
      l as unknown as { keys: Map<string, { completions: { requests: number[]; tokenTotal: number } }> }
    ).keys.get("k")!;
    assert.equal(state.completions.requests.length, 60, "one slot per second of the minute, whatever the traffic");
    assert.equal(state.completions.tokenTotal, 200_000);
  });

  test("a key without limits keeps no state", () => {
    const l = new RateLimiter();
    for (let i = 0; i < 1000; i++) admit(l, key({}, `k${i}`), 5, i).settle(5);
    assert.equal((l as unknown as { keys: Map<string, unknown> }).keys.size, 0);
  });
});

describe("RateLimiter: token counts", () => {
  test("counts have a rate of their own, rpm times the factor, that never uses up completions", () => {
    const l = new RateLimiter({ countRpmFactor: 3 });
    const p = key({ rpm: 1 });
    for (let i = 0; i < 3; i++) {
      const h = l.admitCount(p, i);
      assert.equal(h["x-ratelimit-limit-counts"], "3");
      assert.equal(h["x-ratelimit-remaining-counts"], String(2 - i));
    }
    const err = refused(() => l.admitCount(p, 10));
    assert.match(err.message, /3 token counts per minute/);
    assert.equal(asHttp(err).headers["retry-after"], "60");
    admit(l, p, 0, 11); // the key's one completion of the minute is still there
    assert.equal(l.admitCount(p, 60_000)["x-ratelimit-remaining-counts"], "2", "the first counts have left the window");
  });

  test("a key without rpm counts without limit", () => {
    assert.deepEqual(new RateLimiter().admitCount(key({ tpm: 5, concurrency: 1 }), 0), {});
  });
});
