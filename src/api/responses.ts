import { base62 } from "../core/ids.js";
import type { ModelConfig } from "../config/schema.js";
import type { SystemPromptSource } from "../prompt/build.js";
import type { TokenLogprob } from "../engines/engine.js";

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export type WireFinishReason = "stop" | "length" | "tool_calls";

/** A call of the answer as OpenAI sends it. */
export interface WireToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

export function usage(promptTokens: number, completionTokens: number): Usage {
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
  };
}

/** A tool call's id, as OpenAI's: "call_" and 24 characters. */
export function toolCallId(): string {
  return `call_${base62(24)}`;
}

export function completionId(): string {
  return `chatcmpl-${base62(24)}`;
}

/** One entry of GET /v1/models, with the reference's fields in the reference's order. */
export function modelObject(m: ModelConfig, description: string) {
  return {
    id: m.id,
    object: "model",
    created: m.created,
    owned_by: m.owned_by,
    description,
    name: m.name,
    max_input_tokens: m.max_input_tokens,
    max_output_tokens: m.max_output_tokens,
    context_window: m.context_window,
    default_shape: m.default_shape,
    available_shapes: Object.keys(m.shapes),
  };
}

/**
 * Builds the chunks of one streamed completion. Every chunk carries the same id, object, created and model;
 * content chunks, sent once per token, are a precomputed prefix plus the JSON-escaped text.
 */
export class ChunkWriter {
  private readonly head: string;
  private readonly contentPrefix: string;

  constructor(
    readonly id: string,
    readonly created: number,
    readonly model: string,
  ) {
    this.head = `{"id":${JSON.stringify(id)},"object":"chat.completion.chunk","created":${created},"model":${JSON.stringify(model)}`;
    this.contentPrefix = `${this.head},"choices":[{"index":0,"delta":{"content":`;
  }

  role(): string {
    return `${this.head},"choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}`;
  }
  content(text: string, logprobs?: readonly TokenLogprob[]): string {
    if (logprobs === undefined) return `${this.contentPrefix}${JSON.stringify(text)}},"finish_reason":null}]}`;
    return `${this.contentPrefix}${JSON.stringify(text)}},"logprobs":${JSON.stringify({ content: logprobs, refusal: null })},"finish_reason":null}]}`;
  }
  /** A call's first chunk, as OpenAI streams it: its index, id, type and name, with empty arguments. */
  toolCallStart(index: number, id: string, name: string): string {
    return this.delta({ tool_calls: [{ index, id, type: "function", function: { name, arguments: "" } }] });
  }
  /** More of a call's arguments. */
  toolCallArguments(index: number, args: string): string {
    return this.delta({ tool_calls: [{ index, function: { arguments: args } }] });
  }
  private delta(d: unknown): string {
    return `${this.head},"choices":[{"index":0,"delta":${JSON.stringify(d)},"finish_reason":null}]}`;
  }
  usage(u: Usage): string {
    return `${this.head},"choices":[],"usage":${JSON.stringify(u)}}`;
  }
  finish(reason: WireFinishReason): string {
    return `${this.head},"choices":[{"index":0,"delta":{},"finish_reason":"${reason}"}]}`;
  }
}

/** The non-streamed `chat.completion` object (OpenAI's shape). */
export function completionObject(
  id: string,
  created: number,
  model: string,
  content: string,
  finish: WireFinishReason,
  u: Usage,
  toolCalls: WireToolCall[] = [],
  /** The text's tokens' log-probabilities, when the request asked for them. */
  logprobs: readonly TokenLogprob[] | null = null,
) {
  // With calls, OpenAI's content is null when the answer has no text.
  const message =
    toolCalls.length > 0
      ? { role: "assistant", content: content === "" ? null : content, tool_calls: toolCalls }
      : { role: "assistant", content };
  return {
    id,
    object: "chat.completion",
    created,
    model,
    choices: [
      {
        index: 0,
        message,
        ...(logprobs !== null ? { logprobs: { content: logprobs, refusal: null } } : {}),
        finish_reason: finish,
      },
    ],
    usage: u,
  };
}

export interface TokenCountInput {
  model: string;
  promptTokens: number;
  limits: { trimLimit: number; contextSize: number; contextLimit: number; outputLimit: number };
  systemPromptSource: SystemPromptSource;
  keptMessages: number;
  shapeId: string | null;
}

/** The body of POST /v1/tokens/count, in the reference's order. */
export function tokenCountObject(t: TokenCountInput) {
  return {
    object: "token_count",
    model: t.model,
    usage: usage(t.promptTokens, 0),
    limits: {
      trim_limit: t.limits.trimLimit,
      context_size: t.limits.contextSize,
      context_limit: t.limits.contextLimit,
      output_limit: t.limits.outputLimit,
    },
    _lucena: {
      system_prompt_source: t.systemPromptSource,
      trimmed_messages: t.keptMessages,
      shape_id: t.shapeId,
    },
  };
}

/** A legacy completion's id, as OpenAI's: "cmpl-" and 24 characters. */
export function textCompletionId(): string {
  return `cmpl-${base62(24)}`;
}

/** The non-streamed `text_completion` object (OpenAI's legacy completions). */
export function textCompletionObject(
  id: string,
  created: number,
  model: string,
  text: string,
  finish: WireFinishReason,
  u: Usage,
  logprobs: unknown = null,
) {
  return {
    id,
    object: "text_completion",
    created,
    model,
    choices: [{ text, index: 0, logprobs, finish_reason: finish }],
    usage: u,
  };
}

/** The chunks of a streamed legacy completion: text, then the finish, then (when asked) the usage. */
export class TextChunkWriter {
  private readonly head: string;

  constructor(id: string, created: number, model: string) {
    this.head = `{"id":${JSON.stringify(id)},"object":"text_completion","created":${created},"model":${JSON.stringify(model)}`;
  }

  text(text: string, logprobs: unknown = null): string {
    return `${this.head},"choices":[{"text":${JSON.stringify(text)},"index":0,"logprobs":${JSON.stringify(logprobs)},"finish_reason":null}]}`;
  }
  finish(reason: WireFinishReason): string {
    return `${this.head},"choices":[{"text":"","index":0,"logprobs":null,"finish_reason":"${reason}"}]}`;
  }
  usage(u: Usage): string {
    return `${this.head},"choices":[],"usage":${JSON.stringify(u)}}`;
  }
}
