import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pino } from "pino";
import type { ModelConfig } from "../src/config/schema.js";
import { sampling, type OutputFormat } from "../src/engines/engine.js";
import { LlamaEngine } from "../src/engines/llama/llama-engine.js";
import type { ChatMessageBody, Generation } from "./sse-client.js";
import { round } from "./stats.js";

export interface InProcessEngine {
  engine: LlamaEngine;
  /** Everything the engine logged, parsed. */
  logs: Record<string, unknown>[];
  /** The "model loaded" log entry (contextSize, sequences, threads, ms). */
  loaded: Record<string, unknown>;
  encode(messages: ChatMessageBody[]): Promise<number[]>;
  generate(prompt: number[], maxTokens: number, temperature: number): Promise<Generation>;
  close(): Promise<void>;
}

/**
 * The server's own embedded engine class, loaded in this process with the same model config: what the HTTP
 * path costs is the difference between this and the same generation over HTTP/SSE.
 */
export async function loadInProcess(config: ModelConfig): Promise<InProcessEngine> {
  const logs: Record<string, unknown>[] = [];
  const log = pino(
    { level: "info" },
    {
      write: (line: string) => {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      },
    },
  );
  const dataDir = mkdtempSync(join(tmpdir(), "lucena-bench-inproc-"));
  const engine = new LlamaEngine(config, dataDir, log);
  try {
    await engine.load();
  } catch (err) {
    rmSync(dataDir, { recursive: true, force: true });
    throw err;
  }
  const loaded = logs.find((e) => e.msg === "model loaded") ?? {};
  return {
    engine,
    logs,
    loaded,
    encode: async (messages) => {
      const tokens = await engine.encoder.encode(messages);
      if (!Array.isArray(tokens)) throw new Error("an encoding without a limit stopped early");
      return tokens;
    },
    generate: async (prompt, maxTokens, temperature) => {
      const abort = new AbortController();
      const start = performance.now();
      const g: Generation = {
        start,
        chunkTimes: [],
        promptTokens: prompt.length,
        completionTokens: 0,
        finishReason: null,
        text: "",
      };
      try {
        for await (const ev of engine.generate({
          ...sampling({ maxTokens, temperature }),
          input: { kind: "tokens", tokens: prompt },
          signal: abort.signal,
        })) {
          if (ev.type === "text") {
            g.chunkTimes.push(performance.now());
            g.text += ev.text;
          } else if (ev.type === "done") {
            g.completionTokens = ev.completionTokens;
            g.finishReason = ev.finishReason;
          }
        }
      } finally {
        abort.abort();
      }
      if (g.chunkTimes.length < 2) throw new Error(`in-process generation yielded ${g.chunkTimes.length} text events`);
      return g;
    },
    close: async () => {
      await engine.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * One generation on the engine: decode tok/s from the first text to the last (the first token's time is the
 * prompt's). `cut`: it ended before `maxTokens` (the time limit, the model's end, or a grammar complete).
 */
export async function decodeSpeed(
  engine: LlamaEngine,
  prompt: number[],
  opts: { maxTokens: number; timeLimitMs: number; seed?: number; format?: OutputFormat | null },
): Promise<{ tokens: number; tok_s: number; cut: boolean; text: string }> {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), opts.timeLimitMs);
  let first = 0;
  let last = 0;
  let firstTokens = 0;
  let lastTokens = 0;
  let tokens = 0;
  let text = "";
  try {
    for await (const ev of engine.generate({
      ...sampling({ maxTokens: opts.maxTokens, temperature: 0.7, seed: opts.seed ?? 7, format: opts.format ?? null }),
      input: { kind: "tokens", tokens: prompt },
      signal: abort.signal,
    })) {
      if (ev.type === "done") tokens = ev.completionTokens;
      if (ev.type !== "text") continue;
      const now = performance.now();
      text += ev.text;
      lastTokens += ev.tokens ?? 1;
      if (!first) {
        first = now;
        firstTokens = lastTokens;
      }
      last = now;
    }
  } finally {
    clearTimeout(timer);
    abort.abort();
  }
  const cut = tokens < opts.maxTokens;
  const tok_s = last > first ? round((lastTokens - firstTokens) / ((last - first) / 1000)) : NaN;
  return { tokens, tok_s, cut, text };
}
