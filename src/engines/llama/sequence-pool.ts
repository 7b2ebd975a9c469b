import { errors } from "../../core/errors.js";

/**
 * A place in line for a sequence. `ready` settles when a sequence is assigned (or rejects when the signal aborts
 * while waiting); `claim()` then hands it over once. A lease that is never claimed gives its sequence back when
 * its signal aborts, so a caller that gives up before running cannot leak a sequence.
 */
export interface Lease<S> {
  readonly ready: Promise<void>;
  claim(): S | null;
  /** The assigned sequence's score, once `ready` has settled (-1 before). */
  readonly score: number;
}

interface Entry<S> {
  score: (s: S) => number;
  seq?: S;
  seqScore: number;
  claimed: boolean;
  settle: (err?: unknown) => void;
}

/**
 * Hands out a fixed set of sequences. Concurrency contract: single-threaded (event loop). `acquire` decides at
 * once: a free sequence, a place in the FIFO queue, or (queue full) a 503 thrown synchronously, so the caller
 * can still answer with a status before committing to a stream. Among free sequences the one with the highest
 * `score` (the longest prefix of the prompt it already holds) is assigned; among equal scores, the one given
 * first to the constructor. Busy sequences then tend to be the first ones, which llama.cpp decodes best: with a
 * KV cache per sequence it puts only consecutive sequence ids into one micro-batch (llama_batch_allocr::split_equal).
 */
export class SequencePool<S> {
  private readonly free: S[];
  private readonly rank: Map<S, number>;
  private readonly waiters: Entry<S>[] = [];
  readonly size: number;

  constructor(
    private readonly modelId: string,
    items: S[],
    private readonly queueLimit: number,
  ) {
    this.free = [...items];
    this.rank = new Map(items.map((s, i) => [s, i]));
    this.size = items.length;
  }

  /** The sequence's place in the list given to the constructor (the llama.cpp sequence id, for the engine's). */
  indexOf(s: S): number {
    return this.rank.get(s)!;
  }

  get busy(): number {
    return this.size - this.free.length;
  }
  get waiting(): number {
    return this.waiters.length;
  }

  acquire(signal: AbortSignal, score: (s: S) => number): Lease<S> {
    const immediate = this.free.length > 0 && this.waiters.length === 0;
    if (!immediate && this.waiters.length >= this.queueLimit) throw errors.queueFull(this.modelId, 1);

    let settle!: (err?: unknown) => void;
    const ready = new Promise<void>((resolve, reject) => {
      // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- the abort signal's reason, as given
      settle = (err) => (err === undefined ? resolve() : reject(err));
    });
    ready.catch(() => {}); // observed by the claimer; never an unhandled rejection
    const entry: Entry<S> = { score, seqScore: -1, claimed: false, settle };

    const onAbort = () => {
      if (entry.seq === undefined) {
        const i = this.waiters.indexOf(entry);
        if (i !== -1) this.waiters.splice(i, 1);
        entry.settle(signal.reason ?? new Error("aborted"));
      } else if (!entry.claimed) {
        entry.claimed = true; // nobody will: give it back
        this.release(entry.seq);
      }
    };
    if (immediate) this.assign(entry);
    else this.waiters.push(entry);
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });

    return {
      ready,
      get score() {
        return entry.seqScore;
      },
      claim: () => {
        if (entry.seq === undefined || entry.claimed) return null;
        entry.claimed = true;
        signal.removeEventListener("abort", onAbort);
        return entry.seq;
      },
    };
  }

  /** Gives a claimed sequence back; the next waiter, if any, gets a sequence. */
  release(s: S): void {
    this.free.push(s);
    const next = this.waiters.shift();
    if (next) this.assign(next);
  }

  private assign(entry: Entry<S>): void {
    const first = this.free[0];
    // acquire assigns only when a sequence is free, release right after freeing one
    if (first === undefined) throw new Error("SequencePool: assign called with no free sequence");
    let best = 0;
    let bestSeq: S = first;
    let bestScore = -1;
    this.free.forEach((s, i) => {
      const sc = entry.score(s);
      if (sc > bestScore || (sc === bestScore && this.rank.get(s)! < this.rank.get(bestSeq)!)) {
        best = i;
        bestSeq = s;
        bestScore = sc;
      }
    });
    this.free.splice(best, 1);
    entry.seq = bestSeq;
    entry.seqScore = bestScore;
    entry.settle();
  }
}
