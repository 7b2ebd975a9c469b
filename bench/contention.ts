import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { DEFAULT_MODEL } from "../src/config/defaults.js";
import type { ModelConfig } from "../src/config/schema.js";
import { cpuTimesReader, othersUse, type CpuTimes } from "../src/engines/llama/cpu-share.js";
import { decodeSpeed, loadInProcess } from "./inproc.js";
import { median, round, sleep } from "./stats.js";

/**
 * Decode speed of one stream with and without a competing process busy on one core (issue 13's goal: contended
 * ≥ 0.5× uncontended). The server's embedded engine runs in this process; the competitor is a child process
 * spinning in a loop. Rounds alternate quiet and contended generations, so that both see the same machine; each
 * run records how much CPU the rest of the machine used meanwhile (`background_cores`: neither this process nor
 * the competitor), and with `quietBelow` waits for the rest of the machine to go quiet first.
 */

export interface ContentionRun {
  hog: boolean;
  /** The engine's threads once the generation ended (EngineStats.threads), null when the engine does not say. */
  threads: number | null;
  tokens: number;
  decode_tok_s: number;
  /** The generation was cut off at the time limit before `maxTokens`. */
  cut: boolean;
  /** Cores' worth of CPU used during the generation by processes other than this one and the competitor. */
  background_cores: number;
}

export interface ContentionResult {
  max_tokens: number;
  settle_ms: number;
  runs: ContentionRun[];
  uncontended_tok_s: number;
  contended_tok_s: number;
  /** contended / uncontended, medians of the rounds. */
  ratio: number;
  goal: number;
  /** The engine's "model loaded" log fields and every "engine threads" log entry. */
  loaded: Record<string, unknown>;
  thread_changes: Record<string, unknown>[];
}

export const CONTENTION_GOAL = 0.5;

/** A process that keeps one core busy until killed. */
export function startHog(): ChildProcess {
  return spawn(process.execPath, ["-e", "for(;;){}"], { stdio: "ignore" });
}

/** A process's CPU time so far, ms (/proc/<pid>/stat utime + stime, at Linux's 100 ticks a second). */
function processCpuMs(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return 0;
  }
}

/** Cores' worth of CPU that processes other than this one and `hog` use over `ms`. */
async function background(read: () => CpuTimes | undefined, ms: number, hog?: ChildProcess): Promise<number> {
  const a = read();
  const h = processCpuMs(hog?.pid);
  await sleep(ms);
  return backgroundSince(read, a, h, hog);
}

function backgroundSince(
  read: () => CpuTimes | undefined,
  a: CpuTimes | undefined,
  hogMs: number,
  hog?: ChildProcess,
): number {
  const b = read();
  const others = a && b ? othersUse(a, b) : undefined;
  if (others === undefined || !a || !b) return NaN;
  return round(Math.max(0, others - (processCpuMs(hog?.pid) - hogMs) / (b.at - a.at)));
}

async function stopHog(hog: ChildProcess): Promise<void> {
  if (hog.exitCode !== null || hog.signalCode !== null) return;
  const exited = new Promise((r) => hog.once("exit", r));
  hog.kill("SIGKILL");
  await exited;
}

export async function measureContention(opts: {
  config: ModelConfig;
  maxTokens: number;
  rounds: number;
  /** How long the competitor runs before its generation starts (the engine may adapt meanwhile). */
  settleMs: number;
  /** A generation slower than this is cut off (a collapsed engine can take minutes for a few hundred tokens). */
  timeLimitMs: number;
  /** Before each run, wait (up to 10 minutes) until the rest of the machine uses less than this many cores. */
  quietBelow?: number;
  say: (text: string) => void;
}): Promise<ContentionResult> {
  const read = cpuTimesReader();
  const inproc = await loadInProcess(opts.config);
  const { engine, logs: entries, loaded } = inproc;
  const runs: ContentionRun[] = [];
  try {
    const tokens = await inproc.encode([
      { role: "user", content: "Tell me a long story about a lighthouse keeper and the sea." },
    ]);
    await decodeSpeed(engine, tokens, { maxTokens: 8, timeLimitMs: opts.timeLimitMs }); // warm-up
    for (let round = 0; round < opts.rounds; round++) {
      for (const hog of [false, true]) {
        if (opts.quietBelow !== undefined) {
          for (let waited = 0; waited < 600_000 && !((await background(read, 2000)) < opts.quietBelow); waited += 2000);
        }
        const child = hog ? startHog() : undefined;
        try {
          await sleep(opts.settleMs);
          const a = read();
          const hogMs = processCpuMs(child?.pid);
          const r = await decodeSpeed(engine, tokens, { maxTokens: opts.maxTokens, timeLimitMs: opts.timeLimitMs });
          const busy = backgroundSince(read, a, hogMs, child);
          const threads = engine.stats().threads ?? null;
          runs.push({ hog, threads, tokens: r.tokens, decode_tok_s: r.tok_s, cut: r.cut, background_cores: busy });
          opts.say(
            `round ${round + 1}, ${hog ? "one core busy" : "quiet"}: ${r.tok_s} tok/s over ${r.tokens} tokens${r.cut ? " (cut off)" : ""}, threads ${threads ?? "?"}, background ${busy} cores`,
          );
        } finally {
          if (child) await stopHog(child);
        }
      }
    }
  } finally {
    await inproc.close();
  }
  const of = (hog: boolean) => median(runs.filter((r) => r.hog === hog).map((r) => r.decode_tok_s));
  const uncontended = of(false);
  const contended = of(true);
  return {
    max_tokens: opts.maxTokens,
    settle_ms: opts.settleMs,
    runs,
    uncontended_tok_s: round(uncontended),
    contended_tok_s: round(contended),
    ratio: round(contended / uncontended, 3),
    goal: CONTENTION_GOAL,
    loaded: { threads: loaded.threads, sequences: loaded.sequences, contextSize: loaded.contextSize },
    thread_changes: entries
      .filter((e) => typeof e.msg === "string" && e.msg.startsWith("engine threads"))
      .map(({ msg, threads, others }) => ({ msg, threads, others })),
  };
}

/**
 * `node dist/bench/contention.js [model.gguf] [maxTokens] [rounds] [threads] [quietBelow]`: prints the result as
 * JSON (progress on stderr).
 */
if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const [model = "data/bench/bench.gguf", maxTokens = "256", rounds = "2", threads = "0", quietBelow] =
    process.argv.slice(2);
  const config: ModelConfig = {
    ...DEFAULT_MODEL,
    id: "bench",
    source: resolve(model),
    context_size: 2048,
    parallel: 1,
    threads: Number(threads),
  };
  const result = await measureContention({
    config,
    maxTokens: Number(maxTokens),
    rounds: Number(rounds),
    settleMs: 3000,
    timeLimitMs: 60_000,
    quietBelow: quietBelow === undefined ? undefined : Number(quietBelow),
    say: (t) => console.error(t),
  });
  console.log(JSON.stringify(result, null, 2));
}
