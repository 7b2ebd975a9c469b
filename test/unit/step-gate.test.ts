import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { setImmediate as nextTurn } from "node:timers/promises";
import { StepGate } from "../../src/engines/llama/step-gate.js";

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
    const waiting = a.arrive().then(() => { released = true; });
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
    const p = a.arrive().then(() => { released = true; });
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
    const p = a.arrive().then(() => { released = true; });
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

describe("step gate: prompt tokens per step, and starting together", () => {
  const opts = { promptTokens: 100, streamingPromptTokens: 8, holdTokens: 300 };

  test("with no stream running, prompts share the step's prompt tokens equally, and what one cannot use goes to the others", async () => {
    const gate = new StepGate(opts);
    const a = gate.join(0);
    const b = gate.join(1);
    const c = gate.join(2);
    const got = await Promise.all([
      a.arrive({ kind: "prompt", remaining: 10 }),
      b.arrive({ kind: "prompt", remaining: 500 }),
      c.arrive({ kind: "prompt", remaining: 500 }),
    ]);
    assert.deepEqual(got, [10, 45, 45]);
  });

  test("beside a streaming sequence, prompts get the streaming budget; more prompts than tokens wait for the next step", async () => {
    const gate = new StepGate({ ...opts, streamingPromptTokens: 2 });
    const s = gate.join(0);
    await s.arrive();
    s.received();
    const p = [1, 2, 3].map((id) => gate.join(id));
    const released: number[] = [];
    const asks = p.map((m, i) => m.arrive({ kind: "prompt", remaining: 50 }).then((n) => released.push(i + 1) && n));
    const stream = s.arrive();
    assert.equal(await stream, 0);
    await nextTurn();
    assert.deepEqual(released.sort(), [1, 2], "two prompt tokens: one each for the first two prompts");
    assert.deepEqual(await Promise.all(asks.slice(0, 2)), [1, 1]);
    assert.deepEqual(gate.snapshot(), { members: 4, streaming: 1, waiting: 1, inStep: 3 });
    s.received();
    p[0].received();
    p[1].received();
    assert.equal(await asks[2], 2, "the third prompt goes in the next step, alone: both tokens");
  });

  test("a sequence ready to start waits for the prompts that arrived with it, and they start streaming in one step", async () => {
    const gate = new StepGate(opts);
    const first = gate.join(0);
    assert.equal(await first.arrive({ kind: "prompt", remaining: 100 }), 100); // alone: its whole prompt
    const second = gate.join(1); // arrives during that step
    const secondPrompt = second.arrive({ kind: "prompt", remaining: 150 });
    first.received();
    let firstStarted = false;
    const firstStart = first.arrive({ kind: "start" }).then(() => { firstStarted = true; });
    assert.equal(await secondPrompt, 100);
    await nextTurn();
    assert.equal(firstStarted, false, "held: 150 prompt tokens were left, at most 300 are waited for");
    second.received();
    assert.equal(await second.arrive({ kind: "prompt", remaining: 50 }), 50);
    await nextTurn();
    assert.equal(firstStarted, false);
    second.received();
    const secondStart = second.arrive({ kind: "start" });
    await Promise.all([firstStart, secondStart]);
    assert.deepEqual(gate.snapshot(), { members: 2, streaming: 0, waiting: 0, inStep: 2 }, "both start in the same step");
  });

  test("a ready sequence does not wait for long prompts, nor once a sequence streams", async () => {
    const gate = new StepGate(opts);
    const a = gate.join(0);
    const long = gate.join(1);
    const [nStart, nLong] = await Promise.all([a.arrive({ kind: "start" }), long.arrive({ kind: "prompt", remaining: 1000 })]);
    assert.deepEqual([nStart, nLong], [0, 100], "1,000 tokens left is more than the 300 waited for: a starts at once");

    const gate2 = new StepGate(opts);
    const s = gate2.join(0);
    await s.arrive(); // streaming
    s.received();
    const b = gate2.join(1);
    const c = gate2.join(2);
    const [ns, nb, nc] = await Promise.all([s.arrive(), b.arrive({ kind: "start" }), c.arrive({ kind: "prompt", remaining: 20 })]);
    assert.deepEqual([ns, nb, nc], [0, 0, 8], "b starts beside the stream; c gets the streaming budget");
  });
});

describe("step gate: a ready sequence is never held by prompts that arrive after it", () => {
  test("prompts arriving one after another while none streams do not keep a ready sequence waiting", async () => {
    const gate = new StepGate({ promptTokens: 10, streamingPromptTokens: 4, holdTokens: 1000 });
    const a = gate.join(0);
    const b = gate.join(1);
    await Promise.all([a.arrive({ kind: "prompt", remaining: 5 }), b.arrive({ kind: "prompt", remaining: 20 })]);
    a.received();
    b.received();
    let aStarted = false;
    const aStart = a.arrive({ kind: "start" }).then(() => { aStarted = true; });
    assert.equal(await b.arrive({ kind: "prompt", remaining: 15 }), 10); // b was there when a became ready: a waits
    await nextTurn();
    assert.equal(aStarted, false);
    b.received();
    const bStart = b.arrive({ kind: "start" });
    const c = gate.join(2); // a new request, after a and b became ready, in the same step
    const cAsk = c.arrive({ kind: "prompt", remaining: 500 });
    assert.deepEqual(await Promise.all([aStart.then(() => 0), bStart, cAsk]), [0, 0, 10], "a and b start; c's prompt holds neither");
    assert.deepEqual(gate.snapshot(), { members: 3, streaming: 0, waiting: 0, inStep: 3 });
  });
});

describe("step gate: a member busy before its first prompt step still holds a ready sequence", () => {
  test("a ready sequence waits for a member that joined with a prompt and is busy elsewhere, and goes when it leaves", async () => {
    const gate = new StepGate({ promptTokens: 100, streamingPromptTokens: 4, holdTokens: 1000 });
    const a = gate.join(0, 50);
    assert.equal(await a.arrive({ kind: "prompt", remaining: 50 }), 50);
    const b = gate.join(1, 80); // its sequence is being cleared: it has not asked for a step yet
    a.received();
    let started = false;
    const aStart = a.arrive({ kind: "start" }).then(() => { started = true; });
    await nextTurn();
    await nextTurn();
    assert.equal(started, false, "b's 80 prompt tokens are coming");
    b.leave(); // b's client went away
    await aStart;
    assert.equal(started, true);
  });
});
