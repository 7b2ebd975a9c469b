import assert from "node:assert/strict";
import { test } from "node:test";
import { NO_USAGE_JOURNAL } from "../../src/keys/ledger.js";
import { LiveView } from "../../src/observability/live-view.js";

const START = { requestId: "r", keyId: null, model: "m", stream: true, maxCompletionTokens: 1000 };
const counts = (completionTokens: number) => ({ promptTokens: 5, completionTokens, ttftMs: 1, durationMs: 1 });

test("tokens count as they are delivered: a running stream shows, and a minute later it is gone", () => {
  let now = 1_000_000_000;
  const live = new LiveView(() => now);
  const entry = live.journal(NO_USAGE_JOURNAL).open(START);
  entry.deliver(counts(30));
  now += 500;
  entry.deliver(counts(60));
  assert.deepEqual(live.lastMinute("m"), { tokensPerSecond: 1, requests: 0 }, "60 tokens over the minute, none ended");
  now += 30_000;
  entry.deliver(counts(120));
  entry.end({ ...counts(120), status: 200, state: "complete", finishReason: "stop" });
  live.observe({
    requestId: "r",
    method: "POST",
    route: "/v1/chat/completions",
    status: 200,
    durationMs: 30_500,
    keyId: null,
    aborted: false,
    completion: { model: "m", stream: true, promptTokens: 5, completionTokens: 120, finishReason: "stop", ttftMs: 1 },
  });
  assert.deepEqual(live.lastMinute("m"), { tokensPerSecond: 2, requests: 1 });
  now += 45_000;
  assert.deepEqual(live.lastMinute("m"), { tokensPerSecond: 1, requests: 1 }, "the first 60 tokens left the window");
  now += 60_000;
  assert.deepEqual(live.lastMinute("m"), { tokensPerSecond: 0, requests: 0 });
  assert.deepEqual(live.lastMinute("other"), { tokensPerSecond: 0, requests: 0 });
});

test("recent errors: 4xx and 5xx, newest first, at most 50; a client that left is not one", () => {
  const live = new LiveView();
  const record = (status: number, i: number) => ({
    requestId: `r${i}`,
    method: "GET",
    route: "/v1/models",
    status,
    durationMs: 1,
    keyId: null,
    aborted: false,
    completion: null,
  });
  live.observe(record(499, 0));
  live.observe(record(200, 1));
  for (let i = 0; i < 60; i++) live.observe(record(i % 2 ? 401 : 503, i + 2));
  const errors = live.recentErrors();
  assert.equal(errors.length, 50);
  assert.equal(errors[0].requestId, "r61");
  assert.ok(errors.every((e) => e.status === 401 || e.status === 503));
});
