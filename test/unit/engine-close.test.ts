import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { platform } from "node:os";
import { describe, test } from "node:test";
import type { EngineEvent } from "../../src/engines/engine.js";
import { loadThreadPool, releaseThreadPools } from "../../src/engines/llama/thread-pool.js";
import { embeddedEngine, greedyOptions } from "../helpers/engine.js";

const onLinux = platform() === "linux";
/** The process's thread ids: a thread that ends leaves this set, whatever threads start meanwhile. */
const threadIds = () => new Set(readdirSync("/proc/self/task"));

// One file of its own: releasing the kept pools is for the end of a process, and changes how every later
// decode step in it runs.
describe("closing the embedded engine", () => {
  test("close() while generations run: each ends as cancelled before the context goes, none throws", async (t) => {
    const e = await embeddedEngine(t, { parallel: 3, threads: 2, context_size: 3 * 1024 });
    const runs = [0, 1, 2].map(async (i) => {
      const events: EngineEvent[] = [];
      // The consumer's own signal is never aborted: only close() stops these.
      for await (const ev of e.generate(await greedyOptions(e, `Tell a long story, number ${i}.`, 900)))
        events.push(ev);
      return events;
    });
    await new Promise((r) => setTimeout(r, 200)); // every generation has started
    await e.close();
    for (const events of await Promise.all(runs)) {
      const done = events.at(-1);
      assert.equal(done?.type, "done");
      assert.equal(done?.type === "done" && done.finishReason, "cancelled");
    }
    assert.equal(e.stats().busy, 0, "every sequence was given back before the context was disposed");
  });

  test(
    "releaseThreadPools() ends the kept pools' threads; later steps still run, without a pool",
    { skip: onLinux ? false : "Linux only" },
    async (t) => {
      const pool = loadThreadPool();
      assert.ok(pool.loaded);
      const e = await embeddedEngine(t, { parallel: 1, threads: 2 });
      for await (const _ of e.generate(await greedyOptions(e, "Warm the pool.", 8)));
      const kept = pool.stats().poolsKept;
      assert.ok(kept >= 1, `a pool is kept between steps (${kept})`);
      const before = threadIds();
      assert.equal(releaseThreadPools(), kept);
      assert.equal(pool.stats().poolsKept, 0);
      // Each kept pool of 2 threads has one worker of its own (the caller is the other): at least `kept` threads ended.
      const after = threadIds();
      const ended = [...before].filter((id) => !after.has(id)).length;
      assert.ok(ended >= kept, `their threads were joined (${ended} of ${before.size} ended, ${kept} pools)`);

      const created = pool.stats().poolsCreated;
      let tokens = 0;
      for await (const ev of e.generate(await greedyOptions(e, "Still decoding?", 8)))
        if (ev.type === "done") tokens = ev.completionTokens;
      assert.equal(tokens, 8);
      assert.equal(pool.stats().poolsCreated, created, "no pool is made after the release");
      assert.equal(pool.stats().poolsKept, 0);
    },
  );
});
