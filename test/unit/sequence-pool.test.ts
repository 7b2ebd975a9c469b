import { describe, test } from "node:test";
import { asHttp } from "../helpers/errors.js";
import assert from "node:assert/strict";
import { SequencePool, type Lease } from "../../src/engines/llama/sequence-pool.js";
import { LucenaError } from "../../src/core/errors.js";

const noScore = () => 0;
const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Whether a promise has settled by now, and how. */
async function state(p: Promise<unknown>): Promise<"pending" | "resolved" | "rejected"> {
  let s: "pending" | "resolved" | "rejected" = "pending";
  p.then(
    () => (s = "resolved"),
    () => (s = "rejected"),
  );
  await tick();
  return s;
}

describe("SequencePool", () => {
  test("a free sequence is leased at once and claimed once", async () => {
    const pool = new SequencePool("m", ["s1", "s2"], 4);
    const lease = pool.acquire(new AbortController().signal, noScore);
    assert.equal(await state(lease.ready), "resolved");
    assert.equal(pool.busy, 1);
    assert.equal(pool.waiting, 0);
    const s = lease.claim();
    assert.ok(s === "s1" || s === "s2");
    assert.equal(lease.claim(), null, "a second claim gets nothing");
    assert.equal(pool.busy, 1);
    pool.release(s);
    assert.equal(pool.busy, 0);
  });

  test("size, busy and waiting track the pool", async () => {
    const pool = new SequencePool("m", ["a", "b"], 4);
    assert.equal(pool.size, 2);
    const l1 = pool.acquire(new AbortController().signal, noScore);
    const l2 = pool.acquire(new AbortController().signal, noScore);
    const l3 = pool.acquire(new AbortController().signal, noScore);
    assert.equal(pool.busy, 2);
    assert.equal(pool.waiting, 1);
    assert.equal(await state(l3.ready), "pending");
    assert.equal(l3.claim(), null, "nothing to claim before a sequence is assigned");
    pool.release(l1.claim()!);
    assert.equal(pool.waiting, 0);
    assert.equal(pool.busy, 2);
    assert.equal(await state(l3.ready), "resolved");
    pool.release(l2.claim()!);
    pool.release(l3.claim()!);
    assert.equal(pool.busy, 0);
  });

  test("waiters are served in FIFO order", async () => {
    const pool = new SequencePool("m", ["only"], 10);
    const first = pool.acquire(new AbortController().signal, noScore);
    const order: number[] = [];
    const waiters: Lease<string>[] = [];
    for (let i = 0; i < 5; i++) {
      const l = pool.acquire(new AbortController().signal, noScore);
      void l.ready.then(() => order.push(i));
      waiters.push(l);
    }
    assert.equal(pool.waiting, 5);
    let held = first.claim()!;
    for (let i = 0; i < 5; i++) {
      pool.release(held);
      await tick();
      assert.deepEqual(
        order,
        Array.from({ length: i + 1 }, (_, j) => j),
      );
      held = waiters[i].claim()!;
      assert.equal(held, "only");
      for (let j = i + 1; j < 5; j++) assert.equal(waiters[j].claim(), null);
    }
    pool.release(held);
    assert.equal(pool.busy, 0);
    assert.equal(pool.waiting, 0);
  });

  test("a full queue throws the 503 synchronously from acquire", () => {
    const pool = new SequencePool("lucena-coder-latest", ["s"], 2);
    pool.acquire(new AbortController().signal, noScore);
    pool.acquire(new AbortController().signal, noScore);
    pool.acquire(new AbortController().signal, noScore);
    assert.equal(pool.waiting, 2);
    let returned: unknown = "nothing";
    assert.throws(
      () => {
        returned = pool.acquire(new AbortController().signal, noScore);
      },
      (err: unknown) => {
        assert.ok(err instanceof LucenaError);
        assert.equal(asHttp(err).status, 503);
        assert.equal(asHttp(err).type, "server_error");
        assert.ok(asHttp(err).headers["retry-after"], "carries Retry-After");
        assert.match(err.message, /lucena-coder-latest/);
        return true;
      },
    );
    assert.equal(returned, "nothing", "no lease (and no rejected promise) is returned");
    assert.equal(pool.waiting, 2, "the refused request is not queued");
  });

  test("a queue limit of 0 refuses as soon as every sequence is busy, but still leases free ones", () => {
    const pool = new SequencePool("m", ["s"], 0);
    const l = pool.acquire(new AbortController().signal, noScore);
    assert.equal(l.claim(), "s");
    assert.throws(
      () => pool.acquire(new AbortController().signal, noScore),
      (e: unknown) => e instanceof LucenaError && asHttp(e).status === 503,
    );
  });

  test("aborting a waiter removes it from the queue and rejects its ready", async () => {
    const pool = new SequencePool("m", ["s"], 4);
    const holder = pool.acquire(new AbortController().signal, noScore);
    const ac = new AbortController();
    const quitter = pool.acquire(ac.signal, noScore);
    const stayer = pool.acquire(new AbortController().signal, noScore);
    assert.equal(pool.waiting, 2);
    const reason = new Error("client went away");
    ac.abort(reason);
    assert.equal(pool.waiting, 1);
    await assert.rejects(quitter.ready, (e) => e === reason);
    assert.equal(quitter.claim(), null);
    // The sequence goes to the next waiter, not to the one that left.
    pool.release(holder.claim()!);
    assert.equal(await state(stayer.ready), "resolved");
    assert.equal(stayer.claim(), "s");
    assert.equal(quitter.claim(), null);
  });

  test("a waiter whose signal is already aborted is not queued", async () => {
    const pool = new SequencePool("m", ["s"], 4);
    pool.acquire(new AbortController().signal, noScore);
    const lease = pool.acquire(AbortSignal.abort(), noScore);
    assert.equal(pool.waiting, 0);
    assert.equal(await state(lease.ready), "rejected");
  });

  test("an assigned but never claimed lease gives its sequence back when its signal aborts", async () => {
    const pool = new SequencePool("m", ["s"], 4);
    const ac = new AbortController();
    const lease = pool.acquire(ac.signal, noScore);
    assert.equal(await state(lease.ready), "resolved");
    assert.equal(pool.busy, 1);
    ac.abort();
    assert.equal(pool.busy, 0, "no leaked sequence");
    assert.equal(lease.claim(), null, "an abandoned lease cannot be claimed any more");
    const next = pool.acquire(new AbortController().signal, noScore);
    assert.equal(next.claim(), "s");
  });

  test("a waiter assigned on release and then abandoned passes the sequence on to the next waiter", async () => {
    const pool = new SequencePool("m", ["s"], 4);
    const holder = pool.acquire(new AbortController().signal, noScore);
    const ac = new AbortController();
    const abandoned = pool.acquire(ac.signal, noScore);
    const next = pool.acquire(new AbortController().signal, noScore);
    pool.release(holder.claim()!);
    assert.equal(await state(abandoned.ready), "resolved");
    assert.equal(await state(next.ready), "pending");
    ac.abort();
    assert.equal(await state(next.ready), "resolved");
    assert.equal(next.claim(), "s");
    assert.equal(pool.busy, 1);
    pool.release("s");
    assert.equal(pool.busy, 0);
  });

  test("an already-aborted signal on a free pool leaks nothing", () => {
    const pool = new SequencePool("m", ["s"], 4);
    const lease = pool.acquire(AbortSignal.abort(), noScore);
    assert.equal(lease.claim(), null);
    assert.equal(pool.busy, 0);
  });

  test("aborting after claim does not give the sequence back (the claimer owns it)", () => {
    const pool = new SequencePool("m", ["s"], 4);
    const ac = new AbortController();
    const lease = pool.acquire(ac.signal, noScore);
    assert.equal(lease.claim(), "s");
    ac.abort();
    assert.equal(pool.busy, 1);
    pool.release("s");
    assert.equal(pool.busy, 0);
  });

  test("the free sequence with the highest score is chosen", () => {
    interface Seq {
      id: string;
      cached: number;
    }
    const seqs: Seq[] = [
      { id: "a", cached: 2 },
      { id: "b", cached: 9 },
      { id: "c", cached: 5 },
    ];
    const pool = new SequencePool<Seq>("m", seqs, 4);
    const byCache = (s: Seq) => s.cached;
    const first = pool.acquire(new AbortController().signal, byCache);
    assert.equal(first.score, 9, "the lease carries the chosen sequence's score");
    assert.equal(first.claim()!.id, "b");
    assert.equal(pool.acquire(new AbortController().signal, byCache).claim()!.id, "c");
    pool.release(seqs[1]);
    pool.release(seqs[2]);
    // A different score picks differently among the same free sequences.
    const fewest = (s: Seq) => 100 - s.cached;
    assert.equal(pool.acquire(new AbortController().signal, fewest).claim()!.id, "a");
    assert.equal(pool.acquire(new AbortController().signal, fewest).claim()!.id, "c");
  });

  test("a waiter's score picks among the sequences free when it is served", async () => {
    interface Seq {
      id: string;
    }
    const a = { id: "a" };
    const b = { id: "b" };
    const pool = new SequencePool<Seq>("m", [a, b], 4);
    const la = pool.acquire(new AbortController().signal, noScore).claim()!;
    const lb = pool.acquire(new AbortController().signal, noScore).claim()!;
    const prefersB = pool.acquire(new AbortController().signal, (s) => (s.id === "b" ? 10 : 1));
    assert.equal(prefersB.score, -1, "no score before it is served");
    pool.release(la);
    await prefersB.ready;
    // Only one was free when it was served, and its score is the one the lease reports.
    assert.equal(prefersB.claim(), la);
    assert.equal(prefersB.score, 1);
    pool.release(lb);
    pool.release(la);
    assert.equal(pool.busy, 0);
    const c = pool.acquire(new AbortController().signal, (s) => (s.id === "b" ? 10 : 1));
    assert.equal(c.claim(), b);
  });

  test("scores of 0 everywhere still assign a sequence", () => {
    const pool = new SequencePool("m", ["x", "y"], 4);
    const l1 = pool.acquire(new AbortController().signal, () => 0).claim();
    const l2 = pool.acquire(new AbortController().signal, () => 0).claim();
    assert.deepEqual([l1, l2].sort(), ["x", "y"]);
    assert.equal(pool.busy, 2);
  });
  test("among equal scores the first sequence given wins, so busy sequences stay at the low ids", async () => {
    const pool = new SequencePool("m", ["s0", "s1", "s2", "s3"], 4);
    const signal = new AbortController().signal;
    const take = async () => {
      const lease = pool.acquire(signal, noScore);
      await lease.ready;
      return lease.claim()!;
    };
    const [a, b, c] = [await take(), await take(), await take()];
    assert.deepEqual([a, b, c], ["s0", "s1", "s2"]);
    pool.release(b);
    pool.release(a);
    // s1 and s0 are free again (s0 freed last); the next two requests get s0 then s1, beside the busy s2.
    assert.deepEqual([await take(), await take()], ["s0", "s1"]);
    // A longer prefix still wins over a lower id.
    pool.release("s0");
    pool.release("s1");
    const lease = pool.acquire(signal, (s) => (s === "s1" ? 10 : 0));
    await lease.ready;
    assert.equal(lease.claim(), "s1");
  });
});
