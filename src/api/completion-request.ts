import { Type, type Static } from "@sinclair/typebox";
import { errors } from "../core/errors.js";
import { SAMPLING_FIELDS } from "./chat-request.js";
import type { TokenLogprob } from "../engines/engine.js";

/**
 * The body of POST /v1/completions (OpenAI's legacy completions): a raw prompt, no chat template, and with
 * `suffix` fill-in-the-middle. The sampling fields are chat's, with the same checks; llama.cpp's `grammar` and
 * `json_schema` constrain the answer as they do for chat.
 */
export const CompletionBodySchema = Type.Object(
  {
    model: Type.String({ minLength: 1 }),
    prompt: Type.Union([
      Type.String(),
      Type.Array(Type.String(), { minItems: 1, maxItems: 1 }),
      Type.Array(Type.Integer({ minimum: 0 }), { minItems: 1 }),
      Type.Array(Type.Array(Type.Integer({ minimum: 0 }), { minItems: 1 }), { minItems: 1, maxItems: 1 }),
    ]),
    suffix: Type.Optional(Type.Union([Type.String(), Type.Null()])),
    max_tokens: Type.Optional(Type.Union([Type.Integer({ minimum: 1 }), Type.Null()])),
    stream: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
    stream_options: Type.Optional(
      Type.Union([Type.Object({ include_usage: Type.Optional(Type.Boolean()) }), Type.Null()]),
    ),
    echo: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
    n: Type.Optional(Type.Union([Type.Integer({ minimum: 1 }), Type.Null()])),
    ...SAMPLING_FIELDS,
  },
  { additionalProperties: true },
);

export type CompletionBody = Static<typeof CompletionBodySchema>;

/** OpenAI's default max_tokens for legacy completions (an editor's completion is short). */
export const COMPLETION_MAX_TOKENS_DEFAULT = 16;

/** The prompt as one text or one token list (OpenAI takes a batch; this server one prompt a request). */
export function promptOf(body: CompletionBody): string | number[] {
  const p = body.prompt;
  if (typeof p === "string") return p;
  const first = p[0]!;
  if (typeof first === "string") return first;
  if (Array.isArray(first)) return first;
  return p as number[];
}

/** Completion fields that would change the answer and are not done here: a 400 naming each. */
export function checkCompletionUnsupported(body: CompletionBody): void {
  const raw = body as Record<string, unknown>;
  const lp = raw.logprobs;
  if (lp !== undefined && lp !== null && (typeof lp !== "number" || !Number.isInteger(lp) || lp < 0 || lp > 5)) {
    throw errors.invalidRequest("logprobs must be an integer from 0 to 5 (the alternatives a token).", "logprobs");
  }
  if (typeof lp === "number" && body.echo === true) {
    throw errors.invalidRequest("'echo' with 'logprobs' (the prompt's log-probabilities) is not supported.", "echo");
  }
  if (typeof raw.best_of === "number" && raw.best_of !== 1) {
    throw errors.invalidRequest("The parameter 'best_of' is not supported by this server.", "best_of");
  }
  for (const field of ["tools", "tool_choice", "response_format", "messages"]) {
    if (raw[field] !== undefined && raw[field] !== null) {
      throw errors.invalidRequest(
        `'${field}' is a Chat Completions parameter: send it to /v1/chat/completions.`,
        field,
      );
    }
  }
  if (body.echo === true && typeof promptOf(body) !== "string") {
    throw errors.invalidRequest("'echo' needs the prompt as text, not tokens.", "echo");
  }
}

/** The legacy `logprobs` (0 to 5 alternatives a token), or null when not asked. */
export function legacyLogprobs(body: CompletionBody): number | null {
  const lp = (body as Record<string, unknown>).logprobs;
  return typeof lp === "number" ? lp : null;
}

/**
 * Tokens' log-probabilities in the legacy completions' shape, their `text_offset` counted from `offset` (where
 * their text starts in the answer).
 */
export function legacyLogprobsObject(entries: readonly TokenLogprob[], offset: number) {
  const text_offset: number[] = [];
  let at = offset;
  for (const e of entries) {
    text_offset.push(at);
    at += e.token.length;
  }
  return {
    tokens: entries.map((e) => e.token),
    token_logprobs: entries.map((e) => e.logprob),
    top_logprobs: entries.map((e) => Object.fromEntries(e.top_logprobs.map((t) => [t.token, t.logprob]))),
    text_offset,
  };
}
