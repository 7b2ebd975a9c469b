import { base62 } from "../core/ids.js";
import type { TokenLogprob } from "../engines/engine.js";

/**
 * The Responses API's objects and stream events (OpenAI's shapes): the `response` object, its output items
 * (`message` with `output_text`, `function_call`), and the typed events of its stream, each with its
 * `sequence_number`.
 */

export const responseId = () => `resp_${base62(24)}`;
export const messageItemId = () => `msg_${base62(24)}`;
export const callItemId = () => `fc_${base62(24)}`;

export interface OutputText {
  type: "output_text";
  text: string;
  annotations: [];
  /** The text's tokens' log-probabilities, when `top_logprobs` (or the include) asked for them; else empty. */
  logprobs: TokenLogprob[];
}

export interface MessageItem {
  type: "message";
  id: string;
  status: "in_progress" | "completed" | "incomplete";
  role: "assistant";
  content: OutputText[];
}

export interface FunctionCallItem {
  type: "function_call";
  id: string;
  call_id: string;
  name: string;
  arguments: string;
  status: "in_progress" | "completed" | "incomplete";
}

export type OutputItem = MessageItem | FunctionCallItem;

export interface ResponseUsage {
  input_tokens: number;
  input_tokens_details: { cached_tokens: number };
  output_tokens: number;
  output_tokens_details: { reasoning_tokens: number };
  total_tokens: number;
}

export function responseUsage(input: number, output: number): ResponseUsage {
  return {
    input_tokens: input,
    input_tokens_details: { cached_tokens: 0 },
    output_tokens: output,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: input + output,
  };
}

/** What a response repeats of its request, as OpenAI's does. */
export interface ResponseRequestEcho {
  model: string;
  instructions: string | null;
  max_output_tokens: number | null;
  temperature: number;
  top_p: number;
  tools: unknown[];
  tool_choice: unknown;
  parallel_tool_calls: boolean;
  text: { format: unknown };
  previous_response_id: string | null;
  store: boolean;
  metadata: Record<string, string>;
  user: string | null;
}

export type ResponseStatus = "in_progress" | "completed" | "incomplete" | "failed";

export interface ResponseState {
  id: string;
  created_at: number;
  status: ResponseStatus;
  output: OutputItem[];
  usage: ResponseUsage | null;
  error: { code: string; message: string } | null;
}

/** The `response` object, the request's echo in OpenAI's order of fields. */
export function responseObject(state: ResponseState, echo: ResponseRequestEcho) {
  return {
    id: state.id,
    object: "response",
    created_at: state.created_at,
    status: state.status,
    error: state.error,
    incomplete_details: state.status === "incomplete" ? { reason: "max_output_tokens" } : null,
    instructions: echo.instructions,
    max_output_tokens: echo.max_output_tokens,
    model: echo.model,
    output: state.output,
    parallel_tool_calls: echo.parallel_tool_calls,
    previous_response_id: echo.previous_response_id,
    reasoning: { effort: null, summary: null },
    store: echo.store,
    temperature: echo.temperature,
    text: echo.text,
    tool_choice: echo.tool_choice,
    tools: echo.tools,
    top_p: echo.top_p,
    truncation: "disabled",
    usage: state.usage,
    user: echo.user,
    metadata: echo.metadata,
  };
}

/** The text of the output: what `output_text` (the SDKs' convenience) joins. */
export function outputText(items: readonly OutputItem[]): string {
  return items
    .filter((i): i is MessageItem => i.type === "message")
    .flatMap((i) => i.content.map((c) => c.text))
    .join("");
}

/** The events of one response's stream, numbered in order: `event: <type>` and the event as its data. */
export class ResponseEvents {
  private seq = 0;

  event(type: string, fields: Record<string, unknown>): { name: string; data: string } {
    return { name: type, data: JSON.stringify({ type, sequence_number: this.seq++, ...fields }) };
  }
}
