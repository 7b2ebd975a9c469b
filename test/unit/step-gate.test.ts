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
    assert.deepEqual(gate.snapshot(), { members: 2, waiting: 0, inStep: 2 });

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
    assert.deepEqual(gate.snapshot(), { members: 2, waiting: 0, inStep: 2 }, "both are in the next step");
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
    assert.deepEqual(gate.snapshot(), { members: 0, waiting: 0, inStep: 0 });
  });
});
