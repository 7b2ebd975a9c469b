// Streams one chat completion: POST /v1/chat/completions with stream: true, read as SSE with eventsource-parser.
import { createParser } from "eventsource-parser";
import { ApiError, errorFromBody, readBody } from "./api";

export interface ChatMessage {
  role: "user" | "assistant";
  content: string;
}

export interface StreamHandlers {
  /** A piece of the answer's text. */
  onContent: (text: string) => void;
  onUsage: (promptTokens: number, completionTokens: number) => void;
}

interface Chunk {
  choices?: { delta?: { content?: string | null } }[];
  usage?: { prompt_tokens?: number; completion_tokens?: number } | null;
  error?: unknown;
}

/** Resolves when the stream ends ([DONE] or its end); throws ApiError for an error answer or error event. */
export async function streamChat(
  key: string,
  body: { model: string; messages: ChatMessage[]; shape?: string },
  handlers: StreamHandlers,
  signal: AbortSignal,
): Promise<void> {
  const res = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json", accept: "text/event-stream" },
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
    signal,
    credentials: "omit",
  });
  if (!res.ok || !res.body) {
    throw errorFromBody(res.status, await readBody(res), res.headers.get("retry-after"));
  }
  // Set from the parser's callback, so kept in an object (not narrowed away by the compiler).
  const st: { failure: ApiError | null; done: boolean } = { failure: null, done: false };
  const parser = createParser({
    onEvent(e) {
      if (st.done || st.failure) return;
      if (e.data === "[DONE]") {
        st.done = true;
        return;
      }
      let chunk: Chunk;
      try {
        chunk = JSON.parse(e.data) as Chunk;
      } catch {
        return;
      }
      if (chunk.error !== undefined && chunk.error !== null) {
        st.failure = errorFromBody(500, chunk, null);
        return;
      }
      if (chunk.usage) handlers.onUsage(chunk.usage.prompt_tokens ?? 0, chunk.usage.completion_tokens ?? 0);
      const text = chunk.choices?.[0]?.delta?.content;
      if (text) handlers.onContent(text);
    },
  });
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  try {
    while (!st.done && !st.failure) {
      const { value, done: end } = await reader.read();
      if (end) break;
      parser.feed(decoder.decode(value, { stream: true }));
    }
  } finally {
    reader.cancel().catch(() => undefined);
  }
  if (st.failure) throw st.failure;
}
