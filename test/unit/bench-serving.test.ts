import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { arrivalTimes, planRequests, servingMetrics, type RequestOutcome } from "../../bench/serving.js";
import { percentile } from "../../bench/stats.js";

function outcome(index: number, o: Partial<RequestOutcome>): RequestOutcome {
  return {
    index,
    ok: true,
    sent_ms: 0,
    late_ms: 0,
    prompt_tokens: 100,
    completion_tokens: 10,
    max_tokens: 10,
    finish_reason: "length",
    ttft_ms: 1000,
    tpot_ms: 50,
    e2e_ms: 1450,
    end_ms: 1450,
    ...o,
  };
}

describe("serving benchmark: workload and figures", () => {
  test("the plan: lengths within their ranges, the first request at once, exponential gaps of mean exactly 1", () => {
    const plan = planRequests(13, 20_000, { promptTokens: [100, 600], outputTokens: [32, 192] });
    assert.deepEqual(plan, planRequests(13, 20_000, { promptTokens: [100, 600], outputTokens: [32, 192] }));
    assert.notDeepEqual(plan.slice(0, 50), planRequests(14, 50, { promptTokens: [100, 600], outputTokens: [32, 192] }));
    assert.equal(plan[0].gap, 0);
    assert.ok(
      plan.every((p) => p.prompt_tokens >= 100 && p.prompt_tokens <= 600 && p.max_tokens >= 32 && p.max_tokens <= 192),
    );
    assert.ok(plan.some((p) => p.prompt_tokens === 100) && plan.some((p) => p.prompt_tokens === 600));
    const gaps = plan.slice(1).map((p) => p.gap);
    const mean = gaps.reduce((s, g) => s + g, 0) / gaps.length;
    assert.ok(Math.abs(mean - 1) < 1e-9, `mean gap ${mean}`);
    // Exponential: the median gap is ln 2, and about e^-2 of the gaps exceed 2.
    assert.ok(Math.abs(percentile(gaps, 50) - Math.LN2) < 0.03);
    assert.ok(Math.abs(gaps.filter((g) => g > 2).length / gaps.length - Math.exp(-2)) < 0.01);
  });

  test("arrival times: the same pattern at every rate, scaled by 1 / rate; the last at (count − 1) ÷ rate", () => {
    const plan = planRequests(7, 10);
    const at1 = arrivalTimes(plan, 1);
    const at4 = arrivalTimes(plan, 4);
    assert.equal(at1[0], 0);
    assert.ok(Math.abs(at4[9] - 9 / 4) < 1e-9);
    for (let i = 1; i < at1.length; i++) {
      assert.ok(at1[i] >= at1[i - 1]);
      assert.ok(Math.abs(at4[i] - at1[i] / 4) < 1e-9);
    }
  });

  test("figures: wall-time rates, per-request TTFT and TPOT percentiles, goodput against both targets", () => {
    const planned = [100, 100, 100, 100, 200].map((prompt_tokens) => ({ prompt_tokens }));
    const outcomes = [
      outcome(0, { end_ms: 2000 }),
      outcome(1, { ttft_ms: 12_000, end_ms: 13_000 }), // misses the TTFT target
      outcome(2, { tpot_ms: 300, completion_tokens: 6, end_ms: 4000 }), // misses TPOT, ended early
      outcome(3, { ttft_ms: 500, tpot_ms: 20, prompt_tokens: 101, end_ms: 20_000 }), // a prompt length off by one
      outcome(4, { ok: false, error: "boom", ttft_ms: NaN, tpot_ms: NaN, sent_ms: 1000, e2e_ms: 500 }),
    ];
    const run = servingMetrics("s", 0.5, outcomes, planned, { ttft_ms: 10_000, tpot_ms: 250 });
    assert.equal(run.duration_s, 20);
    assert.equal(run.completed, 4);
    assert.equal(run.failed, 1);
    assert.deepEqual(run.errors, ["boom"]);
    assert.equal(run.request_s, 0.2);
    assert.equal(run.completion_tokens, 36);
    assert.equal(run.output_tok_s, 1.8);
    assert.equal(run.requested_tokens, 50);
    assert.equal(run.ended_early, 1);
    assert.deepEqual(run.prompt_token_offsets, { "1": 1 });
    assert.equal(run.goodput_req_s, 0.1); // requests 0 and 3
    assert.equal(run.slo_met, 0.4); // of all five, the failed one included
    assert.equal(run.ttft_ms.p50, 1000);
    assert.equal(run.ttft_ms.mean, 3625);
    assert.equal(run.tpot_ms.p50, 50);
    assert.equal(run.tpot_ms.p99, 292.5); // 99th of 20, 50, 50, 300, linearly interpolated
  });
});
