import { errors } from "../../core/errors.js";
import type { Replica, ReplicaPool } from "./replicas.js";

/**
 * A completion's hold on one replica. `ready` settles with the replica assigned, or null when no healthy replica
 * outside the attempt's exclusions is left (or the signal aborted while waiting). `release` gives the place back
 * (more calls do nothing); an abort of the signal releases it too, so a request that gives up before running,
 * or whose caller never iterates, cannot keep a place.
 */
export interface Slot {
  readonly ready: Promise<Replica | null>;
  readonly release: () => void;
}

interface Waiter {
  exclude: ReadonlySet<Replica>;
  assign(r: Replica | null): void;
}

export interface AdmissionOptions {
  modelId: string;
  /** Completions one replica takes at once (upstream.max_in_flight_per_replica). */
  perReplica: number;
  /** Requests that may wait for a place before new ones get 503 (the model's queue_size). */
  queueSize: number;
}

export interface EnterOptions {
  /** Replicas this request already tried. */
  exclude?: ReadonlySet<Replica>;
  /** A later attempt of a request already admitted: never refused, and it waits ahead of new requests. */
  retry?: boolean;
  /** Called should the assigned replica be ejected while the request holds its place (ReplicaPool.begin). */
  onEject?: () => void;
}

/**
 * The upstream counterpart of the embedded engine's sequence pool: at most `perReplica` completions in flight on
 * each healthy replica, a FIFO queue of at most `queueSize` more, and beyond that a 503 thrown synchronously, so
 * that the route can still answer with a status. Waiting happens here rather than in the connection pool or on a
 * replica: a waiting request goes to whichever replica frees a place first, and is never stranded on one that
 * stops answering. Concurrency contract: single-threaded (event loop).
 */
export class AdmissionQueue {
  private readonly waiters: Waiter[] = [];

  constructor(
    private readonly pool: ReplicaPool,
    private readonly opts: AdmissionOptions,
  ) {
    // A re-admitted replica has room; an ejected one may leave waiters with nowhere to go.
    pool.onStateChange(() => this.dispatch());
  }

  get waiting(): number {
    return this.waiters.length;
  }

  get inFlight(): number {
    return this.pool.replicas.reduce((n, r) => n + r.completions, 0);
  }

  /** A place for a request: at once, in line, or (a first attempt, the queue full) a 503 thrown now. */
  enter(signal: AbortSignal, opts: EnterOptions = {}): Slot {
    const exclude = opts.exclude ?? new Set<Replica>();
    const retry = opts.retry ?? false;
    // Waiters are only those no free place suits (dispatch keeps it so): a new request that finds a place
    // takes it, whatever the queue's length.
    if (!retry && this.waiters.length >= this.opts.queueSize && this.free(exclude) === null) {
      throw errors.queueFull(this.opts.modelId, 1);
    }
    let settle!: (r: Replica | null) => void;
    const ready = new Promise<Replica | null>((resolve) => (settle = resolve));
    let end: (() => void) | null = null;
    let done = false;
    const waiter: Waiter = {
      exclude,
      assign: (r) => {
        if (r !== null) {
          r.completions++;
          const stop = this.pool.begin(r, opts.onEject);
          end = () => {
            r.completions--;
            stop();
          };
        }
        settle(r);
      },
    };
    const release = () => {
      if (done) return;
      done = true;
      signal.removeEventListener("abort", release);
      const i = this.waiters.indexOf(waiter);
      if (i !== -1) {
        this.waiters.splice(i, 1);
        settle(null);
      }
      if (end) {
        end();
        this.dispatch();
      }
    };
    if (retry) this.waiters.unshift(waiter);
    else this.waiters.push(waiter);
    this.dispatch();
    if (signal.aborted) release();
    else signal.addEventListener("abort", release, { once: true });
    return { ready, release };
  }

  /** Hands freed places to waiters, in order; a waiter with no healthy replica left to try gets null. */
  private dispatch(): void {
    let i = 0;
    for (let w = this.waiters[i]; w !== undefined; w = this.waiters[i]) {
      const r = this.free(w.exclude);
      if (r === null && this.candidates(w.exclude)) {
        i++;
        continue;
      }
      this.waiters.splice(i, 1);
      w.assign(r);
    }
  }

  private free(exclude: ReadonlySet<Replica>): Replica | null {
    return this.pool.pick(exclude, true, (r) => r.completions >= this.opts.perReplica);
  }

  /** Whether any healthy replica outside `exclude` exists, full or not. */
  private candidates(exclude: ReadonlySet<Replica>): boolean {
    return this.pool.replicas.some((r) => r.state === "healthy" && !exclude.has(r));
  }
}
