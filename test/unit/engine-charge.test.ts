import assert from "node:assert/strict";
import { tokensOf } from "../helpers/fake-engine.js";
import { describe, test } from "node:test";
import type { EngineEvent } from "../../src/engines/engine.js";
import { embeddedEngine, greedyOptions } from "../helpers/engine.js";

// What the real embedded engine reports for charging (docs/api.md, "Rate limits"): the prompt tokens it evaluated, and for each
// text the completion tokens it completes.

describe("the embedded engine's figures for the ledger", () => {
  test("a finished answer: the whole prompt, and its texts' tokens add up to its completion tokens", async (t) => {
    const e = await embeddedEngine(t, { threads: 1, context_size: 1024, parallel: 1 });
    const opts = await greedyOptions(e, "tell me something", 40);
    let tokens = 0;
    let done: EngineEvent | undefined;
    for await (const ev of e.generate(opts)) {
      if (ev.type === "text") tokens += ev.tokens ?? 1;
      else done = ev;
    }
    assert.deepEqual(done, {
      type: "done",
      finishReason: "length",
      completionTokens: 40,
      promptTokens: tokensOf(opts).length,
    });
    assert.equal(tokens, 40);
  });

  test("cancelled while queued behind the only sequence: 0 prompt tokens evaluated", async (t) => {
    const e = await embeddedEngine(t, { threads: 1, context_size: 1024, parallel: 1 });
    const busy = await greedyOptions(e, "keep the sequence busy", 5000);
    const stopBusy = new AbortController();
    const busyEvents = e.generate({ ...busy, signal: stopBusy.signal });
    const first = await busyEvents.next();
    assert.equal(first.value?.type, "text", "the busy generation streams");

    const cut = new AbortController();
    const queued = e.generate({ ...(await greedyOptions(e, "wait in line", 10)), signal: cut.signal });
    const pending = queued.next();
    assert.equal(e.stats().waiting, 1);
    cut.abort();
    assert.deepEqual((await pending).value, {
      type: "done",
      finishReason: "cancelled",
      completionTokens: 0,
      promptTokens: 0,
    });

    stopBusy.abort();
    let last: EngineEvent | undefined;
    for await (const ev of busyEvents) last = ev;
    assert.equal(
      last?.type === "done" && last.promptTokens,
      tokensOf(busy).length,
      "a generation cancelled while streaming had evaluated its whole prompt",
    );
  });
});
