import { exactPrompt, serverCounter, type ExactPrompt } from "./prompts.js";
import { rssMb, type BenchServer } from "./server.js";
import {
  interTokenGaps,
  streamChat,
  summarise,
  type ChatTarget,
  type Generation,
  type GenerationSummary,
} from "./sse-client.js";
import { median, percentile, round, sum } from "./stats.js";

export const TEMPERATURE = 0.7;

/** Distinct openings keep every run cold: no sequence holds more than the template's first tokens of it. */
function opening(tag: string, run: number, stream = 0): string {
  return `Conversation ${tag}-${run}-${stream}-${Math.random().toString(36).slice(2, 8)}.`;
}

function target(server: BenchServer): ChatTarget {
  return { url: server.url, key: server.key, model: server.model };
}

/** The median of every numeric field over the runs. */
export function medians<T extends object>(runs: readonly T[]): Record<string, number> {
  const out: Record<string, number> = {};
  if (runs.length === 0) return out;
  for (const [k, v] of Object.entries(runs[0])) {
    // A run may lack a figure (NaN, e.g. no window where all streams decode): the median is of those that have it.
    if (typeof v === "number")
      out[k] = round(median(runs.map((r) => (r as Record<string, number>)[k]).filter(Number.isFinite)));
  }
  return out;
}

export interface SingleStreamResult {
  prompt_tokens: number;
  runs: GenerationSummary[];
  median: Record<string, number>;
  /** The conversations used, so the in-process engine can generate from the same prompt tokens. */
  prompts: ExactPrompt[];
}

export interface SecondTurnRun {
  cold_ttft_ms: number;
  second_prompt_tokens: number;
  second_ttft_ms: number;
  ratio: number;
}

export interface PrefixResult {
  runs: SecondTurnRun[];
  median: Record<string, number>;
}

/**
 * Single-stream generations with exact-length prompts, each on a fresh conversation. With `secondTurn`, each
 * is followed by the same conversation's second turn (its answer plus a short new question), whose time to
 * first token shows what reusing the shared prefix saves against the cold first turn.
 */
export async function singleStream(
  server: BenchServer,
  opts: { promptTokens: number; runs: number; maxTokens: number; secondTurn?: { maxTokens: number } },
): Promise<{ single: SingleStreamResult; prefix: PrefixResult | null }> {
  const count = serverCounter(server, opts.maxTokens);
  const runs: GenerationSummary[] = [];
  const prompts: ExactPrompt[] = [];
  const turns: SecondTurnRun[] = [];
  for (let i = 0; i < opts.runs; i++) {
    const prompt = await exactPrompt(count, opts.promptTokens, opening(`single${opts.promptTokens}`, i), 1000 + i);
    prompts.push(prompt);
    const cpu0 = process.cpuUsage();
    const g = await streamChat(target(server), {
      messages: prompt.messages,
      max_tokens: opts.maxTokens,
      temperature: TEMPERATURE,
    });
    const cpu = process.cpuUsage(cpu0);
    if (g.promptTokens !== prompt.tokens)
      throw new Error(`usage.prompt_tokens ${g.promptTokens} ≠ counted ${prompt.tokens}`);
    // The bench's own CPU (this process, one stream at a time) is taken from the 2 cores the engine decodes on.
    const s: GenerationSummary = {
      ...summarise(g),
      client_cpu_us_per_chunk: round((cpu.user + cpu.system) / g.chunkTimes.length),
    };
    runs.push(s);
    if (opts.secondTurn) {
      const messages = [
        ...prompt.messages,
        { role: "assistant" as const, content: g.text },
        { role: "user" as const, content: "Thanks. Now list the three most important points, one line each." },
      ];
      const g2 = await streamChat(target(server), {
        messages,
        max_tokens: opts.secondTurn.maxTokens,
        temperature: TEMPERATURE,
      });
      const s2 = summarise(g2);
      turns.push({
        cold_ttft_ms: s.ttft_ms,
        second_prompt_tokens: g2.promptTokens,
        second_ttft_ms: s2.ttft_ms,
        ratio: round(s2.ttft_ms / s.ttft_ms, 3),
      });
    }
  }
  return {
    single: { prompt_tokens: opts.promptTokens, runs, median: medians(runs), prompts },
    prefix: opts.secondTurn ? { runs: turns, median: medians(turns) } : null,
  };
}

export interface ConcurrencyRun {
  streams: number;
  /** Total completion tokens / wall time from the first request to the last chunk (prefill included). */
  aggregate_tok_s: number;
  /**
   * Tokens of every stream in the window where all streams were decoding (from the last stream's first token
   * to the first stream's last), per second: the batched decode rate, comparable to batched-bench's S_TG.
   */
  decode_aggregate_tok_s: number;
  /** Tokens after each stream's first / (last chunk of any stream − first chunk of any): defined even without overlap. */
  decode_span_tok_s: number;
  wall_ms: number;
  ttft_median_ms: number;
  ttft_mean_ms: number;
  ttft_max_ms: number;
  itl_p50_ms: number;
  itl_p99_ms: number;
  /** The worst stream's p99 / its own median inter-token time. */
  worst_p99_over_p50: number;
  /** 1 when every stream produced tokens before any other finished. */
  overlapped: number;
  completion_tokens: number;
}

export interface ConcurrencyResult {
  streams: number;
  prompt_tokens: number;
  max_tokens: number;
  runs: ConcurrencyRun[];
  median: Record<string, number>;
  /** Max RSS of the server seen while this level ran (polled), when asked for. */
  rss_max_mb?: number;
  /** Each run's conversations, so another server can be sent the same ones (not written to the results). */
  prompts?: ExactPrompt[][];
}

function concurrencyRun(streams: number, t0: number, gens: Generation[]): ConcurrencyRun {
  const firsts = gens.map((g) => g.chunkTimes[0]);
  const lasts = gens.map((g) => g.chunkTimes[g.chunkTimes.length - 1]);
  const windowStart = Math.max(...firsts);
  const windowEnd = Math.min(...lasts);
  const inWindow = sum(gens.map((g) => g.chunkTimes.filter((t) => t > windowStart && t <= windowEnd).length));
  const gaps = gens.map(interTokenGaps);
  const completion = sum(gens.map((g) => g.completionTokens));
  const wall = Math.max(...lasts) - t0;
  const ttfts = gens.map((g) => g.chunkTimes[0] - g.start);
  return {
    streams,
    aggregate_tok_s: round(completion / (wall / 1000)),
    decode_aggregate_tok_s: windowEnd > windowStart ? round(inWindow / ((windowEnd - windowStart) / 1000)) : NaN,
    decode_span_tok_s: round((completion - gens.length) / ((Math.max(...lasts) - Math.min(...firsts)) / 1000)),
    wall_ms: round(wall),
    ttft_median_ms: round(median(ttfts)),
    ttft_mean_ms: round(sum(ttfts) / ttfts.length),
    ttft_max_ms: round(Math.max(...ttfts)),
    itl_p50_ms: round(percentile(gaps.flat(), 50)),
    itl_p99_ms: round(percentile(gaps.flat(), 99)),
    worst_p99_over_p50: round(Math.max(...gaps.map((g) => percentile(g, 99) / percentile(g, 50))), 3),
    overlapped: windowEnd > windowStart ? 1 : 0,
    completion_tokens: completion,
  };
}

/** `streams` simultaneous streams of distinct exact-length prompts, `runs` times; RSS polled when asked. */
export async function concurrency(
  server: BenchServer,
  opts: { streams: number; promptTokens: number; maxTokens: number; runs: number; pollRss?: boolean },
): Promise<ConcurrencyResult> {
  const count = serverCounter(server, opts.maxTokens);
  const runs: ConcurrencyRun[] = [];
  const rounds: ExactPrompt[][] = [];
  let rssMax = 0;
  for (let r = 0; r < opts.runs; r++) {
    const prompts: ExactPrompt[] = [];
    for (let s = 0; s < opts.streams; s++) {
      prompts.push(await exactPrompt(count, opts.promptTokens, opening(`c${opts.streams}`, r, s), 5000 + 97 * r + s));
    }
    let polling = true;
    const poller = (async () => {
      while (opts.pollRss && polling) {
        rssMax = Math.max(rssMax, await rssMb(server));
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    })();
    const run = await concurrentRound(target(server), prompts, opts.maxTokens).finally(() => (polling = false));
    await poller;
    runs.push(run);
    rounds.push(prompts);
  }
  return {
    streams: opts.streams,
    prompt_tokens: opts.promptTokens,
    max_tokens: opts.maxTokens,
    runs,
    median: medians(runs),
    ...(opts.pollRss ? { rss_max_mb: rssMax } : {}),
    prompts: rounds,
  };
}

/** All the conversations sent at once; the run's figures from the first request's send to the last chunk. */
async function concurrentRound(
  to: ChatTarget,
  prompts: readonly ExactPrompt[],
  maxTokens: number,
): Promise<ConcurrencyRun> {
  const t0 = performance.now();
  const gens = await Promise.all(
    prompts.map((p) => streamChat(to, { messages: p.messages, max_tokens: maxTokens, temperature: TEMPERATURE })),
  );
  return concurrencyRun(prompts.length, t0, gens);
}

/**
 * The same concurrency level against another server (llama.cpp's): the very conversations each run sent, so
 * both servers evaluate the same prompt tokens.
 */
export async function replayConcurrency(to: ChatTarget, level: ConcurrencyResult): Promise<ConcurrencyResult> {
  const runs: ConcurrencyRun[] = [];
  for (const prompts of level.prompts ?? []) runs.push(await concurrentRound(to, prompts, level.max_tokens));
  return {
    streams: level.streams,
    prompt_tokens: level.prompt_tokens,
    max_tokens: level.max_tokens,
    runs,
    median: medians(runs),
  };
}

/** The single-stream conversations again, one at a time, against another server. */
export async function replaySingle(
  to: ChatTarget,
  single: SingleStreamResult,
  maxTokens: number,
): Promise<Omit<SingleStreamResult, "prompts">> {
  const runs: GenerationSummary[] = [];
  for (const prompt of single.prompts) {
    runs.push(
      summarise(await streamChat(to, { messages: prompt.messages, max_tokens: maxTokens, temperature: TEMPERATURE })),
    );
  }
  return { prompt_tokens: single.prompt_tokens, runs, median: medians(runs) };
}
