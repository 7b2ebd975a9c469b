import { api, type BenchServer } from "./server.js";
import type { ChatMessageBody } from "./sse-client.js";

/** A prompt measured by the server's own /v1/tokens/count (chat template and system prompt included). */
export interface ExactPrompt {
  messages: ChatMessageBody[];
  tokens: number;
}

const WORDS = (
  "the function returns a promise that resolves when every request in the queue has finished and the " +
  "server writes each chunk to the socket as soon as the engine yields it while the client parses the " +
  "stream and measures how long each token takes to arrive over the loopback interface so that we know " +
  "where time goes between the model the scheduler the http layer and the json encoder in the route " +
  "handler which also counts tokens checks limits and records usage for every key in the database"
).split(" ");

/** Deterministic code-review-like filler: `n` words from a seeded generator. */
function filler(n: number, seed: number): string[] {
  let x = (seed * 2654435761) >>> 0 || 1;
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out.push(WORDS[(x >>> 0) % WORDS.length]);
  }
  return out;
}

type Counter = (messages: ChatMessageBody[]) => Promise<number>;

/**
 * Counts with the server's own /v1/tokens/count; a prompt over the budget (a 400) counts as the size it names (a
 * lower bound, "at least N", when the server stopped tokenizing past the budget: still more than any target here).
 */
export function serverCounter(server: BenchServer, maxTokens: number): Counter {
  return async (messages) => {
    try {
      return (
        await api<{ usage: { prompt_tokens: number } }>(server, "/v1/tokens/count", {
          model: server.model,
          messages,
          max_tokens: maxTokens,
        })
      ).usage.prompt_tokens;
    } catch (err) {
      const needs = /: 400 .*needs (?:at least )?(\d+) tokens/.exec((err as Error).message);
      if (needs) return Number(needs[1]);
      throw err;
    }
  };
}

/**
 * Builds a conversation whose prompt is exactly `target` tokens as the server counts it: a system message
 * with a distinct `opening` (so no sequence holds a prefix of it beyond the template's first tokens), and
 * a user message of filler words, searched for by word count and then padded a token at a time.
 */
export async function exactPrompt(count: Counter, target: number, opening: string, seed: number): Promise<ExactPrompt> {
  const system = `${opening} You are a careful senior engineer reviewing a long design note.`;
  const build = (text: string): ChatMessageBody[] => [
    { role: "system", content: system },
    { role: "user", content: `Review the following notes.\n${text}` },
  ];
  const words = filler(Math.max(16, target), seed);
  const textOf = (k: number) => words.slice(0, k).join(" ");
  const base = await count(build(""));
  if (base > target) throw new Error(`the template alone takes ${base} tokens, more than ${target}`);
  // Every word is at least one token, so target − base words reach the target; search below that.
  let lo = 0;
  let hi = Math.min(words.length, target - base);
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if ((await count(build(textOf(mid)))) <= target) lo = mid;
    else hi = mid - 1;
  }
  const pads = [" x", " 1", ".", ",", " y", "!", " z", "?", ";", " q"];
  for (let k = lo; k >= Math.max(0, lo - 8); k--) {
    let text = textOf(k);
    let current = await count(build(text));
    let stuck = false;
    while (current < target && !stuck) {
      stuck = true;
      for (const pad of pads) {
        const n = await count(build(text + pad));
        if (n > current && n <= target) {
          text += pad;
          current = n;
          stuck = false;
          break;
        }
      }
    }
    if (current === target) return { messages: build(text), tokens: current };
  }
  throw new Error(`could not build a prompt of exactly ${target} tokens`);
}
