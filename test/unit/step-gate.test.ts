import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { setImmediate as nextTurn } from "node:timers/promises";
import { StepGate, TPOT_WINDOW } from "../../src/engines/llama/step-gate.js";

describe("step gate: generating sequences ask for their next tokens together", () => {
  test("a member that has its token waits while another member's step runs, then both ask together", async () => {
    const gate = new StepGate();
    const a = gate.join(0);
    const b = gate.join(1);
    // Both arrive together, as after a shared step: released at once.
    await Promise.all([a.arrive(), b.arrive()]);
    assert.deepEqual(gate.snapshot(), { members: 2, streaming: 2, waiting: 0, inStep: 2 });

    a.received();
    let released = false;
    const waiting = a.arrive().then(() => {
      released = true;
    });
    await nextTurn();
    await nextTurn();
    assert.equal(released, false, "a waits: b's step is still running");
    b.received();
    const bAsks = b.arrive(); // as a member does: in the same turn as its token came back
    assert.equal(released, false);
    await Promise.all([waiting, bAsks]);
    assert.deepEqual(gate.snapshot(), { members: 2, streaming: 2, waiting: 0, inStep: 2 }, "both are in the next step");
  });

  test("a member still busy elsewhere (its socket draining) holds the others back one turn of the event loop at most", async () => {
    const gate = new StepGate();
    const a = gate.join(0);
    gate.join(1); // never arrives: its client is slow
    let released = false;
    const p = a.arrive().then(() => {
      released = true;
    });
    assert.equal(released, false);
    await nextTurn();
    await p;
    assert.equal(released, true);
  });

  test("members are let go in ascending sequence id, whatever order they arrived in", async () => {
    const gate = new StepGate();
    const order: number[] = [];
    const members = [5, 2, 7, 3].map((id) => ({ id, m: gate.join(id) }));
    await Promise.all(members.map(({ id, m }) => m.arrive().then(() => order.push(id))));
    assert.deepEqual(order, [2, 3, 5, 7]);
  });

  test("a member that leaves, in a step or waiting, never blocks the others", async () => {
    const gate = new StepGate();
    const a = gate.join(0);
    const b = gate.join(1);
    await Promise.all([a.arrive(), b.arrive()]);
    a.received();
    let released = false;
    const p = a.arrive().then(() => {
      released = true;
    });
    await nextTurn();
    assert.equal(released, false);
    b.leave(); // b's generation ended (cancelled) during its step
    await p;
    assert.equal(released, true);
    a.received();
    a.leave();
    assert.deepEqual(gate.snapshot(), { members: 0, streaming: 0, waiting: 0, inStep: 0 });
  });
});

describe("step gate: the prompt tokens a step is given", () => {
  test("with no stream running, prompts fill the step first come first served: the earliest gets all it can use", async () => {
    const gate = new StepGate({ promptTokens: 100, minPromptTokens: 8 });
    const a = gate.join(0);
    const b = gate.join(1);
    const c = gate.join(2);
    const got = await Promise.all(
      [
        c.arrive({ kind: "prompt", remaining: 500 }), // c arrives at the gate first, but joined last
        a.arrive({ kind: "prompt", remaining: 10 }),
        b.arrive({ kind: "prompt", remaining: 500 }),
      ].map((p, i) => (i === 0 ? Promise.race([p, nextTurn().then(() => -1)]) : p)),
    );
    assert.deepEqual(got, [-1, 10, 90], "a (joined first) gets its 10, b the other 90; c waits for the next step");
    a.received();
    b.received();
    assert.equal(gate.snapshot().waiting, 1);
  });

  test("beside a stream, prompts get the floor until a prompt step has been measured", async () => {
    let now = 0;
    const gate = new StepGate({ promptTokens: 100, minPromptTokens: 8, targetStepMs: 1000, now: () => now });
    const s = gate.join(0);
    await s.arrive();
    now += 10;
    s.received();
    const p = gate.join(1);
    const [, n] = await Promise.all([s.arrive(), p.arrive({ kind: "prompt", remaining: 50 })]);
    assert.equal(n, 8, "no prompt step measured yet: the floor");
    assert.equal(gate.costs().lastPromptBudget, 8);
  });

  test("a start or a stream always goes, one token each, whatever prompts wait", async () => {
    const gate = new StepGate({ promptTokens: 4, minPromptTokens: 4 });
    const a = gate.join(0);
    const b = gate.join(1);
    const c = gate.join(2);
    const got = await Promise.all([
      a.arrive({ kind: "start" }),
      b.arrive({ kind: "prompt", remaining: 400 }),
      c.arrive(),
    ]);
    assert.deepEqual(got, [0, 4, 0]);
    assert.deepEqual(
      gate.snapshot(),
      { members: 3, streaming: 2, waiting: 0, inStep: 3 },
      "a start streams from its first step",
    );
  });

  test("a sequence whose first token has just come counts as streaming: a prompt beside it gets the room its clock leaves", async () => {
    let now = 0;
    const gate = new StepGate({ promptTokens: 100, minPromptTokens: 8, targetStepMs: 50, now: () => now });
    const a = gate.join(0);
    const b = gate.join(1);
    // a's last chunk: its whole prompt, so this step gives its first token.
    assert.deepEqual(
      await Promise.all([a.arrive({ kind: "prompt", remaining: 30 }), b.arrive({ kind: "prompt", remaining: 500 })]),
      [30, 70],
    );
    assert.equal(gate.snapshot().streaming, 1);
    now += 100; // 100 prompt tokens: 1 ms each
    a.received();
    b.received();
    // a is still sending its first token (not back at the gate) and has been for a while: its first 32 gaps have
    // 32 x 50 ms between them, and 1,550 ms are gone. b goes alone, with the 50 ms left, not the whole step.
    now += 1550;
    assert.equal(await b.arrive({ kind: "prompt", remaining: 430 }), 50, "what fits in the room a's window has left");
  });

  test("a ready sequence starts at once: it never waits for prompts that are still being evaluated", async () => {
    let now = 0;
    const gate = new StepGate({ promptTokens: 10, minPromptTokens: 4, targetStepMs: 40, now: () => now });
    const a = gate.join(0);
    const b = gate.join(1);
    assert.deepEqual(
      await Promise.all([a.arrive({ kind: "prompt", remaining: 5 }), b.arrive({ kind: "prompt", remaining: 50 })]),
      [5, 5],
    );
    now += 50; // 10 prompt tokens: 5 ms each
    a.received();
    b.received();
    assert.equal(gate.costs().promptTokenMs, 5);
    const [start, n] = await Promise.all([a.arrive({ kind: "start" }), b.arrive({ kind: "prompt", remaining: 45 })]);
    assert.equal(start, 0);
    assert.equal(n, 8, "a's first token is due: b's prompt gets what keeps the step near 40 ms (8 tokens of 5 ms)");
  });
});

/**
 * A simulated engine: requests arrive at given times (ms), and every step costs what a CPU step of llama.cpp costs,
 * by a linear model with the extra micro-batch a step with prompt tokens beside streams takes. The clock is the
 * simulation's own, so the tests depend on no real timing.
 */
interface SimRequest {
  at: number;
  prompt: number;
  output: number;
}
interface SimResult {
  /** Each request's token times (ms): the first is its first token. */
  tokens: number[][];
  /** Each step: its cost (ms), its tokens due, its prompt tokens, whether a member streamed beside it. */
  steps: Array<{ at: number; ms: number; decodes: number; prompt: number; streams: boolean }>;
  gate: StepGate;
}

const stepCost = (decodes: number, prompt: number) => 20 + 2 * decodes + (prompt > 0 ? 20 + 1.5 * prompt : 0);

async function simulate(
  requests: SimRequest[],
  opts: { promptTokens: number; targetStepMs: number; minPromptTokens: number },
): Promise<SimResult> {
  let now = 0;
  const gate = new StepGate({ ...opts, now: () => now });
  const tokens: number[][] = requests.map(() => []);
  const steps: SimResult["steps"] = [];
  let released: Array<{ kind: "decode" | "prompt"; n: number; done: () => void; streaming: boolean }> = [];
  let busy = 0;
  const freeIds: number[] = Array.from({ length: requests.length }, (_, i) => i);
  const pending = requests.map((r, i) => ({ ...r, i })).sort((a, b) => a.at - b.at);

  /** One request's life, as the engine runs it: prompt chunks, then its first token, then one token a step. */
  const run = async (r: SimRequest & { i: number }) => {
    busy++;
    const id = freeIds.shift()!;
    const m = gate.join(id);
    const step = (kind: "decode" | "prompt", n: number, streaming: boolean) =>
      new Promise<void>((done) => released.push({ kind, n, done, streaming }));
    // The prompt in chunks, the last token included: the step given the rest of it gives the first token.
    let left = r.prompt;
    for (;;) {
      const n = await m.arrive(left === 1 ? { kind: "start" } : { kind: "prompt", remaining: left });
      await step(left === 1 ? "decode" : "prompt", n || 1, false);
      if (left === 1 || n >= left) break;
      m.received();
      left -= n;
    }
    tokens[r.i].push(now);
    m.received();
    for (let k = 1; k < r.output; k++) {
      await m.arrive({ kind: "stream" });
      await step("decode", 1, true);
      tokens[r.i].push(now);
      m.received();
    }
    m.leave();
    freeIds.push(id);
    freeIds.sort((a, b) => a - b);
    busy--;
  };

  const settle = async () => {
    for (let i = 0; i < 4; i++) await nextTurn();
  };
  const arrivals: Promise<void>[] = [];
  const admit = () => {
    while (pending.length > 0 && pending[0].at <= now) arrivals.push(run(pending.shift()!));
  };
  admit();
  for (let guard = 0; guard < 100_000; guard++) {
    await settle();
    const step = released;
    released = [];
    if (step.length === 0) {
      if (pending.length === 0 && busy === 0) break;
      if (pending.length === 0) throw new Error("the gate released nothing while requests wait");
      now = Math.max(now, pending[0].at);
      admit();
      continue;
    }
    const decodes = step.filter((s) => s.kind === "decode").length;
    const prompt = step.filter((s) => s.kind === "prompt").reduce((a, s) => a + s.n, 0);
    const ms = stepCost(decodes, prompt);
    steps.push({ at: now, ms, decodes, prompt, streams: step.some((s) => s.streaming) });
    now += ms;
    admit(); // requests that arrived during the step join now, and wait for the next one
    for (const s of step) s.done();
  }
  await Promise.all(arrivals);
  return { tokens, steps, gate };
}

const gaps = (times: number[]) => times.slice(1).map((t, i) => t - times[i]);

/** The largest mean gap over any TPOT_WINDOW consecutive gaps (over all of them, when there are fewer). */
const worstWindowMean = (times: number[]) => {
  const g = gaps(times);
  const w = Math.min(TPOT_WINDOW, g.length);
  let worst = 0;
  for (let i = 0; i + w <= g.length; i++) worst = Math.max(worst, g.slice(i, i + w).reduce((a, b) => a + b, 0) / w);
  return worst;
};

describe("step gate: a token budget against a simulated step cost", () => {
  const opts = { promptTokens: 512, targetStepMs: 250, minPromptTokens: 16 };

  test("requests arriving during a stream get their prompts in chunks beside it, and every stream's tokens keep to the target", async () => {
    const requests: SimRequest[] = [
      { at: 0, prompt: 100, output: 200 },
      ...Array.from({ length: 6 }, (_, k) => ({ at: 10 + 700 * k, prompt: 300 + 50 * k, output: 40 })),
    ];
    const { tokens, steps, gate } = await simulate(requests, opts);
    const costs = gate.costs();
    assert.ok(
      costs.promptTokenMs !== null && costs.promptTokenMs > 1.5,
      `learned ${costs.promptTokenMs} ms a prompt token`,
    );
    const beside = steps.filter((s) => s.streams && s.prompt > 0);
    assert.ok(beside.length >= 5, `${beside.length} steps had prompt tokens beside a stream`);
    // They are not starved: steps beside streams are near the target or above it, not at the floor.
    const late = beside.slice(2);
    const mean = late.reduce((a, s) => a + s.ms, 0) / late.length;
    assert.ok(mean >= opts.targetStepMs * 0.8, `mean step beside streams ${mean} ms`);
    // Every stream's time per output token, over any TPOT_WINDOW tokens after the first measured steps, is the
    // target at most; no single pause is longer than a step of promptTokens prompt tokens.
    for (const [i, t] of tokens.entries())
      assert.ok(
        worstWindowMean(t.slice(3)) <= opts.targetStepMs * 1.1,
        `request ${i}: a window's mean gap ${worstWindowMean(t.slice(3))} ms`,
      );
    const longest = Math.max(...tokens.flatMap((t) => gaps(t)));
    assert.ok(longest <= stepCost(requests.length, opts.promptTokens), `a pause of ${longest} ms`);
    // Every request got its whole output.
    assert.deepEqual(
      tokens.map((t) => t.length),
      requests.map((r) => r.output),
    );
  });

  test("a stream with time in hand lets an arrival's prompt in by larger steps, and keeps its own mean under the target", async () => {
    // The stream decodes alone for 2 s (22 ms a token, far under 250): the 2,000-token arrival gets steps beyond the
    // 250 ms target, and the stream's mean over any window stays under it.
    const requests: SimRequest[] = [
      { at: 0, prompt: 20, output: 400 },
      { at: 2000, prompt: 2000, output: 5 },
    ];
    const { tokens, steps } = await simulate(requests, opts);
    const beside = steps.filter((s) => s.streams && s.prompt > 0);
    assert.ok(
      beside.some((s) => s.ms > opts.targetStepMs * 1.5),
      `steps beside the stream: ${beside.map((s) => s.ms).join(", ")} ms`,
    );
    assert.ok(
      worstWindowMean(tokens[0]) <= opts.targetStepMs,
      `the stream's worst window mean: ${worstWindowMean(tokens[0])} ms`,
    );
    assert.equal(tokens[1].length, 5);
  });

  test("a stream that has just started counts its tokens to come: an arrival beside it is not held to the target", async () => {
    // The arrival comes right after the stream's first token; the stream's first 32 tokens still have room for
    // larger steps, since the rest of them come at the cost of a step without prompt.
    const requests: SimRequest[] = [
      { at: 0, prompt: 20, output: 400 },
      { at: 60, prompt: 2000, output: 5 },
    ];
    const { tokens, steps } = await simulate(requests, opts);
    const beside = steps.filter((s) => s.streams && s.prompt > 0);
    assert.ok(
      beside.slice(1).some((s) => s.ms > opts.targetStepMs * 1.5),
      `steps beside the stream: ${beside.map((s) => s.ms).join(", ")} ms`,
    );
    assert.ok(
      worstWindowMean(tokens[0]) <= opts.targetStepMs,
      `the stream's worst window mean: ${worstWindowMean(tokens[0])} ms`,
    );
  });

  test("each arrival's first token comes within the steps its prompt needs at the measured budget", async () => {
    const requests: SimRequest[] = [
      { at: 0, prompt: 50, output: 300 },
      { at: 2000, prompt: 800, output: 5 },
    ];
    const { tokens, steps } = await simulate(requests, opts);
    const arrivalStep = steps.findIndex((s) => s.at >= 2000);
    const firstToken = tokens[1][0];
    const stepsTaken = steps.filter((s) => s.at >= steps[arrivalStep - 1].at && s.at < firstToken).length;
    // The budget beside one stream: (250 - 22) / 1.5 ms ≈ 150 prompt tokens a step (the learned cost includes the
    // extra micro-batch), so 800 tokens take about 6 steps; a floor-sized budget would take 50.
    assert.ok(stepsTaken <= 9, `${stepsTaken} steps to the first token of an 800-token prompt`);
  });

  test("no sequence starves: with more streams than the target has room for, prompts still advance by the floor", async () => {
    // 20 ms + 2 ms a token: 120 streams would fill a 250 ms step alone; prompts get the floor of 16.
    const streams = Array.from({ length: 120 }, () => ({ at: 0, prompt: 2, output: 80 }));
    const { tokens, steps } = await simulate([...streams, { at: 500, prompt: 161, output: 3 }], opts);
    const late = tokens[120];
    assert.equal(late.length, 3);
    const arrival = steps.findIndex((s) => s.at >= 500);
    const until = steps.filter((s, i) => i >= arrival - 1 && s.at < late[0]).length;
    assert.ok(
      until <= Math.ceil(160 / 16) + 2,
      `${until} steps to the first token of a 161-token prompt at a floor of 16`,
    );
    assert.ok(
      steps.every((s) => s.prompt === 0 || s.prompt >= 16 || s.prompt === 160 % 16),
      "every prompt step had the floor",
    );
  });

  test("prompts waiting together are served first come first served: the earliest's first token comes first", async () => {
    const requests: SimRequest[] = [0, 1, 2, 3].map((k) => ({ at: k, prompt: 400, output: 20 }));
    const { tokens } = await simulate(requests, opts);
    const firsts = tokens.map((t) => t[0]);
    assert.deepEqual(
      [...firsts].sort((a, b) => a - b),
      firsts,
      `first tokens at ${firsts.join(", ")}`,
    );
    assert.ok(firsts[0] < firsts[3], "not all at once: the first request streams while the others' prompts go in");
  });
});
