import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { availableParallelism, platform } from "node:os";
import { describe, test, type TestContext } from "node:test";
import { MODEL_SHAPES } from "../../src/gguf/model-maker.js";
import { engineThreads, type LlamaEngine } from "../../src/engines/llama/llama-engine.js";
import { loadThreadPool, type ThreadPoolStats } from "../../src/engines/llama/thread-pool.js";
import { embeddedEngine, greedyOptions } from "../helpers/engine.js";

const onLinux = platform() === "linux";

function engine(t: TestContext, threads: number, parallel = 1, contextSize = 512 * parallel): Promise<LlamaEngine> {
  return embeddedEngine(t, { threads, parallel, context_size: contextSize });
}

async function greedy(
  e: LlamaEngine,
  maxTokens: number,
  content = "Count the waves on the shore, one by one.",
): Promise<{ text: string; tokens: number }> {
  let text = "";
  let tokens = -1;
  for await (const ev of e.generate(await greedyOptions(e, content, maxTokens))) {
    if (ev.type === "text") text += ev.text;
    else if (ev.type === "done") tokens = ev.completionTokens;
  }
  return { text, tokens };
}

describe(
  "engine threads persist across decode steps (native/ggml-pool)",
  { skip: onLinux ? false : "native/ggml-pool is built for Linux only" },
  () => {
    test("the module is built and loaded, and threads: 0 then means every core", () => {
      const pool = loadThreadPool();
      assert.ok(pool.loaded, `loaded: ${pool.loaded ? "" : pool.reason}`);
      assert.equal(pool.stats().active, true);
      assert.equal(engineThreads(0), availableParallelism());
      assert.equal(engineThreads(3), 3);
    });

    test("a two-thread engine decodes every step in one kept pool, and says what a one-thread engine says", async (t) => {
      const pool = loadThreadPool();
      assert.ok(pool.loaded);
      const one = await engine(t, 1);
      const two = await engine(t, 2);

      const s0: ThreadPoolStats = pool.stats();
      const single = await greedy(one, 48);
      const s1 = pool.stats();
      assert.equal(s1.pooledComputes, s0.pooledComputes, "one thread needs no pool");
      assert.ok(s1.passthroughComputes - s0.passthroughComputes >= single.tokens);

      const double = await greedy(two, 48);
      const s2 = pool.stats();
      assert.equal(double.tokens, 48);
      assert.ok(
        s2.pooledComputes - s1.pooledComputes >= double.tokens,
        `each decode step ran in a pool (${s2.pooledComputes - s1.pooledComputes} of ≥ ${double.tokens})`,
      );
      assert.ok(
        s2.poolsCreated - s1.poolsCreated <= 1,
        `one pool kept for all steps, not one per step (${s2.poolsCreated - s1.poolsCreated} made)`,
      );
      assert.equal(s2.passthroughComputes, s1.passthroughComputes);

      assert.equal(double.text, single.text, "the same greedy answer at 1 and 2 threads");
      assert.ok(single.text.length > 0);
    });

    test("concurrent generations share decode steps instead of taking turns (the step gate)", async (t) => {
      const pool = loadThreadPool();
      assert.ok(pool.loaded);
      const e = await engine(t, 2, 3);
      const n = 40;
      const before = pool.stats().pooledComputes;
      const answers = await Promise.all([
        greedy(e, n, "First story, please."),
        greedy(e, n, "Second story, please."),
        greedy(e, n, "Third one."),
      ]);
      const steps = pool.stats().pooledComputes - before;
      for (const a of answers) assert.equal(a.tokens, n);
      // Each graph computation is one decode step. Three prompts (one step each, or a shared one) and then n - 1
      // shared steps; taking turns would need about 3n.
      assert.ok(steps <= n + 6, `${steps} decode steps for 3 × ${n} tokens`);
    });
  },
);

/** Anonymous resident memory of this process, in bytes. */
function rssAnon(): number {
  const kb = /RssAnon:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"));
  return Number(kb![1]) * 1024;
}

describe(
  "the KV cache becomes resident as it fills (native/ggml-pool)",
  { skip: onLinux ? false : "native/ggml-pool is built for Linux only" },
  () => {
    test("zeroing by dropping pages leaves every byte 0 and the bytes around the range as they were", () => {
      const pool = loadThreadPool();
      assert.ok(pool.loaded);
      for (const bytes of [8 << 20, (8 << 20) + 4093]) {
        assert.deepEqual(pool.checkLazyZero(bytes), { lazy: true, zero: true, edgesKept: true }, `${bytes} bytes`);
      }
      // Small buffers are written with zeros as ggml does (not worth a madvise).
      assert.deepEqual(pool.checkLazyZero(4096), { lazy: false, zero: true, edgesKept: true });
    });

    test("loading a context does not make its KV cache resident, and the engine then generates", async (t) => {
      const pool = loadThreadPool();
      assert.ok(pool.loaded);
      const parallel = 4;
      const contextSize = 65_536;
      const shape = MODEL_SHAPES.tiny;
      // f16 K and V for every layer, every cell: 64 MiB here.
      const kvBytes = parallel * contextSize * shape.layers * 2 * (shape.embd / shape.heads) * shape.kvHeads * 2;
      const s0 = pool.stats();
      const before = rssAnon();
      const e = await engine(t, 1, parallel, contextSize);
      const grown = rssAnon() - before;
      const s1 = pool.stats();
      assert.ok(s1.lazyClears > s0.lazyClears);
      assert.ok(
        s1.lazyClearedBytes - s0.lazyClearedBytes >= kvBytes * 0.99,
        `dropped ${s1.lazyClearedBytes - s0.lazyClearedBytes} of a ${kvBytes}-byte KV cache`,
      );
      // The context's other structures (cell bookkeeping, the graph reservation) also grow with its size: about
      // 0.4× the KV cache for this model. A resident KV cache would add its whole size on top (measured: 1.2–1.5×).
      assert.ok(
        grown < kvBytes * 0.75,
        `anonymous RSS grew by ${(grown / 2 ** 20).toFixed(1)} MiB for a ${kvBytes / 2 ** 20} MiB KV cache`,
      );
      const answer = await greedy(e, 16);
      assert.equal(answer.tokens, 16);
    });
  },
);
