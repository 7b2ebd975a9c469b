import { readFileSync } from "node:fs";
import { cpus, platform } from "node:os";
import type { Logger } from "../../observability/log.js";

/**
 * Engine threads that give way to other processes.
 *
 * Between the operations of a decode step, ggml's worker threads meet at a barrier where they spin
 * (ggml_barrier in ggml-cpu.c). When another process takes the core of one of them, the others spin at every
 * barrier until the scheduler gives that core back: while other processes used the CPU, a 1,000-token stream
 * took 42–57 s at 2 threads against about 1 s at 1. So while other processes use the cores, an engine decodes
 * with as many threads as cores are left free (one thread meets no barrier at all), and takes the rest back
 * once they are free again.
 *
 * Once a second the monitor reads how busy the cores this process may run on were (/proc/stat, steal
 * included: a core the hypervisor gives to another machine stalls a thread the same way), less this process's
 * own CPU time. It lowers the threads at once and raises them after RAISE_AFTER readings in a row that leave
 * room for more, so that short bursts of work elsewhere do not make it flap. It applies the count through
 * node-llama-cpp's `llama.maxThreads`, which each context's thread splitter reads before every decode batch:
 * the change holds from the next step on. On a CPU the splitter runs before every batch anyway (its default
 * limit there is the larger of 4 and the core count), so a quiet machine's steps cost what they did.
 *
 * Only engines with `threads: 0` adapt. `llama.maxThreads` holds for every context of the process, so while
 * an engine with an explicit thread count is loaded, the monitor keeps out of the way and no engine adapts.
 */

/**
 * A thread is kept while at least this much less than a whole core is free for it, and taken back once at most
 * RAISE_MARGIN less is free, in RAISE_AFTER readings in a row. Measured on 2 cores (bench model, one stream,
 * tok/s at 1 and 2 threads) beside a process busy for part of each 10 ms: none 15 / 27, 15% 15 / 21, 30%
 * 15 / 20, 50% 15 / 16, always 14 / 8. Two threads pay while others use less than half a core.
 */
const LOWER_MARGIN = 0.5;
const RAISE_MARGIN = 0.4;
const RAISE_AFTER = 2;
const INTERVAL_MS = 1000;

/** CPU time counters at one instant. */
export interface CpuTimes {
  /** Wall clock, ms. */
  at: number;
  /** This process's CPU time (every thread: the engine's and Node's), ms. */
  own: number;
  /** Busy and total time of the cores this process may run on, summed, in one unit (clock ticks or ms). */
  busy: number;
  total: number;
  /** How many cores those are. */
  cores: number;
}

/** Cores' worth of CPU other processes used between two readings; undefined when they cannot be compared. */
export function othersUse(a: CpuTimes, b: CpuTimes): number | undefined {
  const total = b.total - a.total;
  const wall = b.at - a.at;
  if (total <= 0 || wall <= 0 || a.cores !== b.cores) return undefined;
  const busy = ((b.busy - a.busy) / total) * b.cores;
  const own = (b.own - a.own) / wall;
  return Math.max(0, busy - own);
}

/**
 * The thread count from readings of other processes' CPU use: lower at once to the cores left free (rounded:
 * a thread stays while half a core is left for it), higher only after RAISE_AFTER readings in a row leave
 * room, to the least they left; never below 1 nor above `ideal`.
 */
export class ThreadShare {
  threads: number;
  private streak = 0;
  private raiseTo = Infinity;

  constructor(
    readonly ideal: number,
    readonly cores: number,
    private readonly raiseAfter = RAISE_AFTER,
  ) {
    this.threads = ideal;
  }

  /** Takes one reading (others' use in cores); returns the threads for the steps until the next one. */
  next(others: number): number {
    const free = this.cores - others;
    const fit = (margin: number) => Math.min(this.ideal, Math.max(1, Math.floor(free + margin)));
    const keep = fit(LOWER_MARGIN);
    const room = fit(RAISE_MARGIN);
    if (keep < this.threads) this.set(keep);
    else if (room <= this.threads) this.set(this.threads);
    else {
      this.raiseTo = Math.min(this.raiseTo, room);
      if (++this.streak >= this.raiseAfter) this.set(this.raiseTo);
    }
    return this.threads;
  }

  /** A decision: `threads` from now on, and a raise needs a fresh streak of readings. */
  private set(threads: number): void {
    this.threads = threads;
    this.streak = 0;
    this.raiseTo = Infinity;
  }
}

/** "0-3,8,10-11" (Cpus_allowed_list) → the cpu numbers. */
export function parseCpuList(list: string): Set<number> {
  const out = new Set<number>();
  for (const part of list.trim().split(",")) {
    if (!part) continue;
    // split always yields a first element: the NaN default is only for the type (a NaN range adds no cpu)
    const [lo = NaN, hi = lo] = part.split("-").map(Number);
    for (let c = lo; c <= hi; c++) out.add(c);
  }
  return out;
}

function ownMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** This process's affinity (Linux), so that cores it may not run on do not count. */
function allowedCpus(): Set<number> | undefined {
  try {
    const m = /^Cpus_allowed_list:\s*(.+)$/m.exec(readFileSync("/proc/self/status", "utf8"));
    const list = m?.[1];
    return list !== undefined ? parseCpuList(list) : undefined;
  } catch {
    return undefined;
  }
}

/** Reads /proc/stat's per-cpu lines (user nice system idle iowait irq softirq steal ...), in clock ticks. */
export function procStatReader(allowed: Set<number> | undefined): () => CpuTimes | undefined {
  return () => {
    let text: string;
    try {
      text = readFileSync("/proc/stat", "utf8");
    } catch {
      return undefined;
    }
    let busy = 0;
    let total = 0;
    let cores = 0;
    for (const line of text.split("\n")) {
      const m = /^cpu(\d+) (.*)$/.exec(line);
      if (!m || (allowed && !allowed.has(Number(m[1])))) continue;
      const [, , fields = ""] = m; // (.*) takes part in every match: the default is never used
      // The first five are in every /proc/stat since Linux 2.6; were one missing, NaN spoils the sums as before.
      const [user = NaN, nice = NaN, system = NaN, idle = NaN, iowait = NaN, irq = 0, softirq = 0, steal = 0] = fields
        .trim()
        .split(/\s+/)
        .map(Number);
      busy += user + nice + system + irq + softirq + steal;
      total += user + nice + system + idle + iowait + irq + softirq + steal;
      cores++;
    }
    return cores > 0 ? { at: performance.now(), own: ownMs(), busy, total, cores } : undefined;
  };
}

/** Elsewhere: os.cpus(), every core (no steal, no affinity). */
function osCpusReader(): CpuTimes {
  let busy = 0;
  let total = 0;
  const all = cpus();
  for (const { times: t } of all) {
    busy += t.user + t.nice + t.sys + t.irq;
    total += t.user + t.nice + t.sys + t.irq + t.idle;
  }
  return { at: performance.now(), own: ownMs(), busy, total, cores: all.length };
}

export function cpuTimesReader(): () => CpuTimes | undefined {
  return platform() === "linux" ? procStatReader(allowedCpus()) : osCpusReader;
}

/** What an engine holds of the monitor: the threads its decode steps use now, and its release. */
export interface ThreadsHandle {
  readonly threads: number;
  release(): void;
}

/** node-llama-cpp's Llama: the limit every context's decode batches are split under. */
export interface ThreadLimit {
  maxThreads: number;
}

export interface CpuShareOptions {
  intervalMs?: number;
  read?: () => CpuTimes | undefined;
}

/** One per llama.cpp runtime (llama-engine.ts makes it with the runtime). */
export class CpuShareMonitor {
  /** The runtime's own limit, restored whenever no engine is held back. */
  private readonly full: number;
  /** The ideal thread count of each adaptive engine held, by handle. */
  private readonly ideals = new Map<number, number>();
  private fixed = 0;
  private creating = 0;
  private nextId = 1;
  private share?: ThreadShare;
  private last?: CpuTimes;
  private timer?: NodeJS.Timeout;
  private readonly read: () => CpuTimes | undefined;
  private readonly intervalMs: number;

  constructor(
    private readonly target: ThreadLimit,
    private readonly log: Logger,
    opts: CpuShareOptions = {},
  ) {
    this.full = target.maxThreads;
    this.read = opts.read ?? cpuTimesReader();
    this.intervalMs = opts.intervalMs ?? INTERVAL_MS;
  }

  /** The threads every adaptive engine's steps use now (at most: concurrent contexts split them). */
  get threads(): number {
    return this.share?.threads ?? this.maxIdeal();
  }

  /** An engine with `threads: 0`, whose decode steps use at most `ideal` threads and fewer under contention. */
  adapt(ideal: number): ThreadsHandle {
    const id = this.nextId++;
    this.ideals.set(id, ideal);
    this.reconsider();
    const threads = () => (this.ideals.has(id) ? Math.min(ideal, this.threads) : ideal);
    return {
      get threads() {
        return threads();
      },
      release: () => {
        if (this.ideals.delete(id)) this.reconsider();
      },
    };
  }

  /** An engine with an explicit thread count: while one is held, no engine adapts. */
  fix(threads: number): ThreadsHandle {
    this.fixed++;
    this.reconsider();
    let released = false;
    return {
      threads,
      release: () => {
        if (released) return;
        released = true;
        this.fixed--;
        this.reconsider();
      },
    };
  }

  /**
   * Runs `create` (a context's creation) with the runtime's full limit: node-llama-cpp caps a new context's
   * threads at the limit of the moment, for good.
   */
  async whileCreating<T>(create: () => Promise<T>): Promise<T> {
    this.creating++;
    this.apply();
    try {
      return await create();
    } finally {
      this.creating--;
      this.apply();
    }
  }

  private maxIdeal(): number {
    return Math.max(1, ...this.ideals.values());
  }

  /** Starts or stops the readings, as the engines held ask. */
  private reconsider(): void {
    const ideal = this.maxIdeal();
    const wanted = this.fixed === 0 && this.ideals.size > 0 && ideal > 1;
    if (wanted && !this.timer) {
      this.share = new ThreadShare(ideal, this.read()?.cores ?? ideal);
      this.last = this.read();
      this.timer = setInterval(() => this.sample(), this.intervalMs);
      this.timer.unref();
    } else if (!wanted && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
      this.share = undefined;
      this.last = undefined;
    } else if (wanted && this.share && this.share.ideal !== ideal) {
      const threads = Math.min(this.share.threads, ideal);
      this.share = new ThreadShare(ideal, this.share.cores);
      this.share.threads = threads;
    }
    this.apply();
  }

  /** Takes one reading and acts on it (every `intervalMs` while an engine adapts; tests call it themselves). */
  sample(): void {
    if (!this.timer) return;
    const now = this.read();
    const others = this.last && now ? othersUse(this.last, now) : undefined;
    this.last = now;
    if (others === undefined || !this.share) return;
    const before = this.share.threads;
    const after = this.share.next(others);
    if (after === before) return;
    this.log.info(
      { component: "engine", threads: after, was: before, others: Math.round(others * 100) / 100 },
      after < before
        ? "engine threads lowered: other processes use the cores"
        : "engine threads raised: cores are free again",
    );
    this.apply();
  }

  /** Sets the runtime's limit: the full one unless engines are held back now. */
  private apply(): void {
    const held = this.share && this.creating === 0 && this.share.threads < this.share.ideal;
    this.target.maxThreads = held ? this.share!.threads : this.full;
  }
}

const monitors = new WeakMap<ThreadLimit, CpuShareMonitor>();

/** The monitor of this llama.cpp runtime (made on first use). */
export function cpuShare(llama: ThreadLimit, log: Logger): CpuShareMonitor {
  let m = monitors.get(llama);
  if (!m) monitors.set(llama, (m = new CpuShareMonitor(llama, log)));
  return m;
}
