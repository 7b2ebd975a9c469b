import assert from "node:assert/strict";
import { describe, test, type TestContext } from "node:test";
import { pino } from "pino";
import {
  CpuShareMonitor,
  othersUse,
  parseCpuList,
  ThreadShare,
  type CpuTimes,
} from "../../src/engines/llama/cpu-share.js";

/** Feeds readings of other processes' use (in cores) and gives the thread count after each. */
function run(share: ThreadShare, others: number[]): number[] {
  return others.map((o) => share.next(o));
}

describe("cpu share: the thread count from other processes' CPU use", () => {
  test("2 cores: a process busy on one core takes a thread at once; it comes back two quiet readings after", () => {
    const share = new ThreadShare(2, 2);
    // Quiet, a little background, then a competitor: with 2 spinning engine threads it gets about 2/3 of a core.
    assert.deepEqual(run(share, [0, 0.1, 0.3]), [2, 2, 2]);
    assert.deepEqual(run(share, [0.67]), [1]);
    // With one engine thread it gets its whole core: still 1.
    assert.deepEqual(run(share, [1, 0.98, 1.02]), [1, 1, 1]);
    // It ends: the thread comes back on the second quiet reading.
    assert.deepEqual(run(share, [0.02, 0.01]), [1, 2]);
  });

  test("a quiet reading between busy ones does not bring the thread back (no flapping)", () => {
    const share = new ThreadShare(2, 2);
    assert.deepEqual(run(share, [1, 0, 1, 0, 1, 0, 0]), [1, 1, 1, 1, 1, 1, 2]);
  });

  test("between lowering and raising there is a band where the count stays as it is", () => {
    // 0.45 cores of other work: 2 threads stay 2 (1.55 free ≥ 1.5), 1 thread stays 1 (1.55 free < 1.6).
    const two = new ThreadShare(2, 2);
    assert.deepEqual(run(two, [0.45, 0.45, 0.45]), [2, 2, 2]);
    const one = new ThreadShare(2, 2);
    assert.deepEqual(run(one, [1, 0.45, 0.45, 0.45]), [1, 1, 1, 1]);
    assert.deepEqual(run(one, [0.35, 0.35]), [1, 2]);
  });

  test("never below one thread, never above the ideal count", () => {
    const share = new ThreadShare(2, 2);
    assert.deepEqual(run(share, [3, 8, 0, 0, 0, 0]), [1, 1, 1, 2, 2, 2]);
    const four = new ThreadShare(4, 8);
    assert.deepEqual(run(four, [0, 3, 4.2, 4.6]), [4, 4, 4, 3]);
  });

  test("many cores: lowered to the cores left free, raised to the least the quiet readings left", () => {
    const share = new ThreadShare(8, 8);
    assert.deepEqual(run(share, [5]), [3]);
    assert.deepEqual(run(share, [2, 4]), [3, 4]);
    assert.deepEqual(run(share, [0, 0]), [4, 8]);
  });
});

describe("cpu share: readings", () => {
  test("other processes' use is the cores' busy share minus this process's own CPU time", () => {
    const a: CpuTimes = { at: 0, own: 0, busy: 0, total: 0, cores: 2 };
    // 1 s; 2 cores at 100 ticks a second each; 150 busy ticks of 200 (1.5 cores), 900 ms of it ours.
    const b: CpuTimes = { at: 1000, own: 900, busy: 150, total: 200, cores: 2 };
    assert.equal(othersUse(a, b), 0.6);
    // Our time counted a little after the cores' (never below 0), and readings that cannot be compared.
    assert.equal(othersUse(a, { ...b, own: 1600 }), 0);
    assert.equal(othersUse(b, { ...b }), undefined);
    assert.equal(othersUse(a, { ...b, cores: 3 }), undefined);
  });

  test("cpu lists as /proc/self/status gives them", () => {
    assert.deepEqual([...parseCpuList("0-3,8,10-11\n")], [0, 1, 2, 3, 8, 10, 11]);
    assert.deepEqual([...parseCpuList("1")], [1]);
  });
});

/** Readings made up from how many cores others and this process used over each 1-second interval. */
function machine(cores: number) {
  let now: CpuTimes = { at: 0, own: 0, busy: 0, total: 0, cores };
  return {
    read: () => now,
    pass(others: number, own = 1) {
      now = {
        at: now.at + 1000,
        own: now.own + own * 1000,
        busy: now.busy + (others + own) * 100,
        total: now.total + cores * 100,
        cores,
      };
    },
  };
}

function monitor(t: TestContext, cores = 2, full = 4) {
  const m = machine(cores);
  const lines: Record<string, unknown>[] = [];
  const log = pino(
    { level: "info" },
    {
      write: (line: string) => {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      },
    },
  );
  const llama = { maxThreads: full };
  // The timer never fires here: each test takes its readings with sample().
  const share = new CpuShareMonitor(llama, log, { read: m.read, intervalMs: 1e9 });
  const tick = (others: number) => {
    m.pass(others);
    share.sample();
  };
  const held: { release(): void }[] = [];
  t.after(() => held.forEach((h) => h.release()));
  return { share, llama, lines, tick, held };
}

describe("cpu share: the monitor sets node-llama-cpp's thread limit", () => {
  test("lowers the limit under contention and logs it, then gives back the runtime's own limit", (t) => {
    const { share, llama, lines, tick, held } = monitor(t);
    const engine = share.adapt(2);
    held.push(engine);
    tick(0);
    assert.equal(llama.maxThreads, 4, "the runtime's own limit while nothing competes");
    assert.equal(engine.threads, 2);
    tick(0.7);
    assert.equal(llama.maxThreads, 1);
    assert.equal(engine.threads, 1);
    assert.deepEqual(
      lines.map((l) => [l.msg, l.threads, l.was, l.others]),
      [["engine threads lowered: other processes use the cores", 1, 2, 0.7]],
    );
    assert.equal(lines[0].level, 30, "info");
    tick(0);
    tick(0);
    assert.equal(llama.maxThreads, 4);
    assert.equal(engine.threads, 2);
    assert.equal(lines.at(-1)!.msg, "engine threads raised: cores are free again");
    engine.release();
    assert.equal(llama.maxThreads, 4);
  });

  test("a context is created under the runtime's own limit, which node-llama-cpp caps its threads at", async (t) => {
    const { share, llama, tick, held } = monitor(t);
    held.push(share.adapt(2));
    tick(1);
    assert.equal(llama.maxThreads, 1);
    const during = await share.whileCreating(async () => llama.maxThreads);
    assert.equal(during, 4);
    assert.equal(llama.maxThreads, 1, "lowered again once the context exists");
  });

  test("an engine with an explicit thread count keeps it: none adapts while it is loaded", (t) => {
    const { share, llama, tick, held } = monitor(t);
    const adaptive = share.adapt(2);
    held.push(adaptive);
    tick(1);
    assert.equal(adaptive.threads, 1);
    const fixed = share.fix(2);
    assert.equal(llama.maxThreads, 4);
    assert.equal(fixed.threads, 2);
    assert.equal(adaptive.threads, 2);
    tick(1);
    assert.equal(llama.maxThreads, 4, "no readings are acted on");
    fixed.release();
    tick(1);
    tick(1);
    assert.equal(llama.maxThreads, 1, "adapting again once it is gone");
  });

  test("an engine of one thread has nothing to give: no readings are taken", (t) => {
    const { share, llama, tick, held } = monitor(t);
    const one = share.adapt(1);
    held.push(one);
    tick(1);
    tick(2);
    assert.equal(llama.maxThreads, 4);
    assert.equal(one.threads, 1);
  });
});
