import { createParser, type EventSourceMessage, type EventSourceParser, type ParseError } from "eventsource-parser";
import type { TokenLogprob } from "../engine.js";

/**
 * Decoding of an OpenAI-compatible upstream's chat completion (vLLM, SGLang, llama.cpp's llama-server, another
 * Lucena One) into a few normalized events. Whatever the upstream sends, decoding never throws: what is not
 * understood is counted and skipped.
 */
export type UpstreamEvent =
  | { type: "text"; text: string; logprobs?: TokenLogprob[] } // a non-empty content delta (with its tokens' logprobs)
  | { type: "finish"; reason: string } // finish_reason as sent: "stop", "length", or another server's own
  | { type: "usage"; promptTokens: number; completionTokens: number }
  /** A piece of a tool call (a delta's), or a whole one (a message's): fields present are added to call `index`. */
  | { type: "tool_call"; index: number; name?: string; arguments?: string }
  | { type: "error"; message: string; status: number | null } // an error object the upstream put in its stream/body
  | { type: "done" }; // `data: [DONE]`

/** Characters one pending line plus one unfinished event may hold before the stream is given up as broken. */
const DEFAULT_MAX_BUFFER_CHARS = 16 * 1024 * 1024;

/** Incremental decoder of an upstream SSE body. Feed raw bytes as they arrive (UTF-8 may split across chunks). */
export class UpstreamStreamDecoder {
  // ignoreBOM keeps a leading BOM in the text so that it is dropped in one place for bytes and strings alike.
  private readonly utf8 = new TextDecoder("utf-8", { ignoreBOM: true });
  private readonly parser: EventSourceParser;
  private readonly maxBufferChars: number;
  private out: UpstreamEvent[] = [];
  private ignoredCount = 0;
  private atStart = true;
  /** Set once the parser's buffer limit was exceeded: everything after is dropped. */
  private broken = false;

  constructor(opts: { maxBufferChars?: number } = {}) {
    this.maxBufferChars = opts.maxBufferChars ?? DEFAULT_MAX_BUFFER_CHARS;
    this.parser = createParser({
      onEvent: (m) => this.message(m),
      onError: (e) => this.invalidLine(e),
      maxBufferSize: this.maxBufferChars,
    });
  }

  /** Count of data payloads that were not JSON or not understood, and of lines that are not SSE fields. */
  get ignored(): number {
    return this.ignoredCount;
  }

  push(chunk: Uint8Array | string): UpstreamEvent[] {
    // A string after bytes first flushes the bytes (an incomplete character among them becomes U+FFFD).
    this.feed(typeof chunk === "string" ? this.utf8.decode() + chunk : this.utf8.decode(chunk, { stream: true }));
    return this.take();
  }

  /** End of body: flushes what is pending (a final event without a trailing blank line is still delivered). */
  end(): UpstreamEvent[] {
    this.feed(this.utf8.decode());
    // The parser drops an event that no blank line closed; closing the line and the event delivers it.
    this.feed("\n\n");
    this.parser.reset();
    this.atStart = true;
    this.broken = false;
    return this.take();
  }

  private feed(text: string): void {
    if (this.broken || text === "") return;
    if (this.atStart) {
      this.atStart = false;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    this.parser.feed(text);
  }

  private take(): UpstreamEvent[] {
    const events = this.out;
    this.out = [];
    return events;
  }

  private message(m: EventSourceMessage): void {
    if (m.data.trim() === "[DONE]") {
      this.out.push({ type: "done" });
      return;
    }
    const json = parseJson(m.data);
    if (m.event === "error") {
      // The upstream named it an error: even plain text is its message.
      this.out.push(errorEvent(json === NOT_JSON ? m.data.trim() : json));
      return;
    }
    const events = json === NOT_JSON ? null : decodePayload(json);
    if (events === null) this.ignoredCount++;
    else this.out.push(...events);
  }

  private invalidLine(e: ParseError): void {
    if (e.type === "max-buffer-size-exceeded") {
      this.broken = true;
      this.out.push({
        type: "error",
        message: `Upstream stream event exceeds ${this.maxBufferChars} characters`,
        status: null,
      });
    } else if (e.type === "unknown-field" && e.field === "error") {
      // Older llama-server builds write a mid-stream error as an `error: {"code":500,"message":…}` line.
      const value = e.value ?? "";
      const json = parseJson(value);
      this.out.push(errorEvent(json === NOT_JSON ? value.trim() : json));
    } else {
      this.ignoredCount++;
    }
  }
}

/** A non-streaming `chat.completion` JSON body (already parsed) → events: text (whole message), finish, usage. Throws nothing; a body with `error` gives an error event. */
export function decodeCompletionBody(body: unknown): UpstreamEvent[] {
  return decodePayload(body) ?? [];
}

type Json = Record<string, unknown>;

const NOT_JSON = Symbol("not JSON");

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return NOT_JSON;
  }
}

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return typeof v === "number" && Number.isFinite(v) && v >= 0;
}

/**
 * One chunk (or a whole completion) → its events in the order text, finish, usage; null when the payload is not
 * a shape this decoder knows.
 */
function decodePayload(v: unknown): UpstreamEvent[] | null {
  if (!isObject(v)) return null;
  if ((v.error !== undefined && v.error !== null) || v.object === "error") return [errorEvent(v)];
  const choices = Array.isArray(v.choices) ? (v.choices as unknown[]) : null;
  const usage = v.usage;
  const hasUsage = isObject(usage) && isCount(usage.prompt_tokens) && isCount(usage.completion_tokens);
  if (choices === null && !hasUsage) return null;

  const events: UpstreamEvent[] = [];
  // Only choice 0. With n > 1 an upstream sends one choice per chunk, so look for index 0 rather than position 0;
  // a choice without an index counts by its position.
  const choice = choices?.find((c, i) => isObject(c) && (typeof c.index === "number" ? c.index : i) === 0) as
    Json | undefined;
  if (choice) {
    // `message` is the non-streamed shape; reasoning_content and role are not content.
    const delta = isObject(choice.delta) ? choice.delta : isObject(choice.message) ? choice.message : {};
    if (typeof delta.content === "string" && delta.content !== "") {
      // OpenAI's logprobs of the delta's tokens, handed on as the replica sent them.
      const lp = isObject(choice.logprobs) && Array.isArray(choice.logprobs.content) ? choice.logprobs.content : null;
      events.push({ type: "text", text: delta.content, ...(lp ? { logprobs: lp as TokenLogprob[] } : {}) });
    }
    // A legacy completion's choice carries its text itself.
    if (typeof choice.text === "string" && choice.text !== "") events.push({ type: "text", text: choice.text });
    if (Array.isArray(delta.tool_calls)) {
      for (const [i, c] of (delta.tool_calls as unknown[]).entries()) {
        if (!isObject(c)) continue;
        const f = isObject(c.function) ? c.function : {};
        events.push({
          type: "tool_call",
          index: typeof c.index === "number" ? c.index : i,
          ...(typeof f.name === "string" && f.name !== "" ? { name: f.name } : {}),
          ...(typeof f.arguments === "string" ? { arguments: f.arguments } : {}),
        });
      }
    }
    if (typeof choice.finish_reason === "string" && choice.finish_reason !== "") {
      events.push({ type: "finish", reason: choice.finish_reason });
    }
  }
  if (hasUsage)
    events.push({
      type: "usage",
      promptTokens: usage.prompt_tokens as number,
      completionTokens: usage.completion_tokens as number,
    });
  return events;
}

/**
 * An error from what an upstream put where an error belongs: `{"error": {...}}`, `{"error": "text"}`, a bare
 * error object (`{"object":"error","message",…}`, llama-server's `{"code","message","type"}`), or plain text.
 */
function errorEvent(v: unknown): UpstreamEvent {
  const e = isObject(v) && v.error !== undefined && v.error !== null ? v.error : v;
  if (typeof e === "string") return { type: "error", message: e || "Upstream error", status: null };
  if (!isObject(e)) return { type: "error", message: "Upstream error", status: null };
  const message =
    typeof e.message === "string" && e.message
      ? e.message
      : typeof e.type === "string" && e.type
        ? e.type
        : "Upstream error";
  const code = e.code;
  const status = typeof code === "number" && Number.isInteger(code) && code >= 400 && code <= 599 ? code : null;
  return { type: "error", message, status };
}
