import { readFileSync } from "node:fs";
import { DEFAULT_UPSTREAM } from "../src/config/defaults.js";
import { api, startServer, type BenchServer } from "./server.js";
import { median, round } from "./stats.js";

/**
 * How long a request sent to a frozen replica takes to be answered by another one. Two tiny-model workers and a
 * gateway in front of them with the default upstream settings; after a warm-up, one worker is stopped with
 * SIGSTOP (its kernel still accepts connections; nothing answers), and `requests` chat completions are sent at
 * once. The gateway routes some of them to the frozen worker (the least busy replica takes turns); each must be
 * answered (200, every token) by the other worker, after the frozen one's ejection or the first-byte timeout,
 * whichever comes first. Every time is from the send to the whole answer, as the client sees it.
 */

export interface FailoverResult {
  requests: number;
  /** Requests the gateway had sent to the frozen worker first (its log's "failed before its first text" lines). */
  rerouted: number;
  /** Times of the rerouted requests (the slowest ones), ms. */
  rerouted_ms: { median: number; max: number };
  /** Times of the others, answered by the live worker at once, ms. */
  direct_ms: { median: number; max: number };
  /** Freeze → the gateway's "replica ejected" line, ms (null: not ejected during the measurement). */
  ejected_after_ms: number | null;
  settings: { health_interval_seconds: number; failures_to_eject: number; first_byte_timeout_seconds: number };
}

function logEntries(server: BenchServer): Array<Record<string, unknown>> {
  return readFileSync(server.logFile, "utf8")
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return {};
      }
    });
}

const chat = (server: BenchServer, content: string) =>
  api<{ usage: { completion_tokens: number } }>(server, "/v1/chat/completions", {
    model: server.model,
    max_tokens: 4,
    messages: [{ role: "user", content }],
  });

export async function measureFailover(opts: {
  cliPath: string;
  modelPath: string;
  requests: number;
  say: (text: string) => void;
}): Promise<FailoverResult> {
  const worker = {
    id: "tiny",
    source: opts.modelPath,
    context_size: 2048,
    parallel: 8,
    threads: 1,
    system_prompt: null,
  };
  opts.say("failover: two tiny-model workers and a gateway in front of them (default upstream settings)");
  const servers: BenchServer[] = [];
  let frozen: BenchServer | null = null;
  try {
    const workers = await Promise.all([0, 1].map(() => startServer({ cliPath: opts.cliPath, model: worker })));
    servers.push(...workers);
    const upstream = { replicas: workers.map((w) => ({ url: w.url, api_key: w.key })) };
    const gateway = await startServer({
      cliPath: opts.cliPath,
      model: { id: worker.id, context_size: worker.context_size, system_prompt: null, upstream },
    });
    servers.push(gateway);
    for (let i = 0; i < 8; i++) await chat(gateway, `warm-up ${i}`);

    frozen = workers[0];
    process.kill(frozen.pid, "SIGSTOP");
    const frozenAt = Date.now();
    opts.say(`failover: one worker stopped (SIGSTOP); ${opts.requests} requests at once through the gateway`);
    const times = await Promise.all(
      Array.from({ length: opts.requests }, async (_, i) => {
        const t0 = performance.now();
        const answer = await chat(gateway, `frozen ${i}`);
        if (answer.usage.completion_tokens !== 4)
          throw new Error(`an answer of ${answer.usage.completion_tokens} tokens`);
        return performance.now() - t0;
      }),
    );
    const log = logEntries(gateway);
    const label = `${frozen.url}/v1`;
    const rerouted = log.filter(
      (e) => e.msg === "upstream request failed before its first text" && e.replica === label,
    ).length;
    const ejected = log.find((e) => e.msg === "replica ejected" && e.replica === label);
    const sorted = [...times].sort((a, b) => a - b);
    const slow = sorted.slice(sorted.length - rerouted);
    const fast = sorted.slice(0, sorted.length - rerouted);
    const summary = (xs: number[]) => ({
      median: xs.length ? round(median(xs)) : 0,
      max: xs.length ? round(Math.max(...xs)) : 0,
    });
    return {
      requests: opts.requests,
      rerouted,
      rerouted_ms: summary(slow),
      direct_ms: summary(fast),
      ejected_after_ms: ejected ? Number(ejected.time) - frozenAt : null,
      settings: {
        health_interval_seconds: DEFAULT_UPSTREAM.health_interval_seconds,
        failures_to_eject: DEFAULT_UPSTREAM.failures_to_eject,
        first_byte_timeout_seconds: DEFAULT_UPSTREAM.first_byte_timeout_seconds,
      },
    };
  } finally {
    if (frozen) process.kill(frozen.pid, "SIGCONT");
    await Promise.all(servers.map((s) => s.stop()));
  }
}
