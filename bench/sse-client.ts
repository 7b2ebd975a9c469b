import { percentile, round } from "./stats.js";

export interface ChatMessageBody {
  role: "system" | "user" | "assistant";
  content: string;
}

/** One generation as the client saw it: every content chunk timestamped on arrival (performance.now()). */
export interface Generation {
  /** When the request was sent (HTTP) or generate() was called (in-process). */
  start: number;
  /** Arrival time of every content chunk, in order. */
  chunkTimes: number[];
  promptTokens: number;
  completionTokens: number;
  finishReason: string | null;
  text: string;
}

/** What the report keeps of one generation: no per-token arrays. */
export interface GenerationSummary {
  prompt_tokens: number;
  completion_tokens: number;
  ttft_ms: number;
  decode_tok_s: number;
  itl_p50_ms: number;
  itl_p99_ms: number;
  total_ms: number;
  /** The client process's CPU time per content chunk received (single-stream runs only: one stream at a time). */
  client_cpu_us_per_chunk?: number;
}

/** Gaps between consecutive content chunks, in ms. */
export function interTokenGaps(g: Generation): number[] {
  const gaps: number[] = [];
  for (let i = 1; i < g.chunkTimes.length; i++) gaps.push(g.chunkTimes[i] - g.chunkTimes[i - 1]);
  return gaps;
}

/**
 * TTFT = first content chunk − start; decode tok/s = (completion_tokens − 1) / (last chunk − first chunk),
 * with completion_tokens from the usage chunk (the first token's time belongs to TTFT).
 */
export function summarise(g: Generation): GenerationSummary {
  const first = g.chunkTimes[0];
  const last = g.chunkTimes[g.chunkTimes.length - 1];
  const gaps = interTokenGaps(g);
  return {
    prompt_tokens: g.promptTokens,
    completion_tokens: g.completionTokens,
    ttft_ms: round(first - g.start),
    decode_tok_s: round((g.completionTokens - 1) / ((last - first) / 1000)),
    itl_p50_ms: round(percentile(gaps, 50)),
    itl_p99_ms: round(percentile(gaps, 99)),
    total_ms: round(last - g.start),
  };
}

export interface ChatTarget {
  url: string;
  key: string;
  model: string;
}

interface StreamChunk {
  choices?: { delta?: { content?: string }; finish_reason?: string | null }[];
  usage?: { prompt_tokens: number; completion_tokens: number };
  error?: { message: string };
}

/**
 * Streams one chat completion over HTTP/SSE with plain fetch and timestamps every content chunk as it arrives.
 * Chunks that arrive in one read share that read's timestamp, which is what a client really sees. Usage is asked
 * for (the project's server sends it anyway; llama.cpp's only when asked). Fields of `body` beyond the three
 * named ones go into the request as they are (e.g. `ignore_eos` for llama.cpp's server).
 */
export async function streamChat(
  target: ChatTarget,
  body: { messages: ChatMessageBody[]; max_tokens: number; temperature: number } & Record<string, unknown>,
  signal?: AbortSignal,
): Promise<Generation> {
  const start = performance.now();
  const res = await fetch(`${target.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${target.key}`, "content-type": "application/json" },
    body: JSON.stringify({ model: target.model, stream: true, stream_options: { include_usage: true }, ...body }),
    ...(signal ? { signal } : {}),
  });
  if (!res.ok || !res.body) throw new Error(`chat completion failed: ${res.status} ${await res.text()}`);
  const g: Generation = { start, chunkTimes: [], promptTokens: 0, completionTokens: 0, finishReason: null, text: "" };
  const decoder = new TextDecoder();
  let buffer = "";
  let done = false;
  for await (const bytes of res.body) {
    const now = performance.now();
    buffer += decoder.decode(bytes as Uint8Array, { stream: true });
    let end: number;
    while ((end = buffer.indexOf("\n\n")) !== -1) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of frame.split("\n")) {
        if (!line.startsWith("data: ")) continue; // comments: ": connected", ": keepalive"
        const data = line.slice(6);
        if (data === "[DONE]") {
          done = true;
          continue;
        }
        const chunk = JSON.parse(data) as StreamChunk;
        if (chunk.error) throw new Error(`error in stream: ${chunk.error.message}`);
        if (chunk.usage) {
          g.promptTokens = chunk.usage.prompt_tokens;
          g.completionTokens = chunk.usage.completion_tokens;
        }
        const choice = chunk.choices?.[0];
        if (choice?.delta?.content) {
          g.chunkTimes.push(now);
          g.text += choice.delta.content;
        }
        if (choice?.finish_reason) g.finishReason = choice.finish_reason;
      }
    }
  }
  if (!done) throw new Error("stream ended without [DONE]");
  if (g.chunkTimes.length < 2) throw new Error(`stream carried ${g.chunkTimes.length} content chunks; need 2 or more`);
  return g;
}
