import { Type, type Static } from "@sinclair/typebox";
import { echo, errors, LucenaError } from "../core/errors.js";
import { SAMPLING_FIELDS, type ChatBody, type ChatMessage, type ToolCall } from "./chat-request.js";

/**
 * The body of POST /v1/responses (OpenAI's Responses API), read into the chat body the one prompt builder and
 * engine take: `input` and `instructions` become messages, `text.format` the response format, the flat `tools`
 * OpenAI's chat tools, `max_output_tokens` max_tokens. The sampling fields chat takes (and llama.cpp's
 * extensions) pass as they are, so the same ones are honoured or refused by name.
 */
export const ResponsesBodySchema = Type.Object(
  {
    model: Type.String({ minLength: 1 }),
    input: Type.Union([Type.String(), Type.Array(Type.Unknown(), { minItems: 1 })]),
    instructions: Type.Optional(Type.Union([Type.String(), Type.Null()])),
    max_output_tokens: Type.Optional(Type.Union([Type.Integer({ minimum: 1 }), Type.Null()])),
    stream: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
    store: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
    previous_response_id: Type.Optional(Type.Union([Type.String({ minLength: 1 }), Type.Null()])),
    text: Type.Optional(Type.Union([Type.Object({ format: Type.Optional(Type.Unknown()) }), Type.Null()])),
    tools: Type.Optional(Type.Union([Type.Array(Type.Unknown()), Type.Null()])),
    metadata: Type.Optional(Type.Union([Type.Record(Type.String(), Type.String()), Type.Null()])),
    truncation: Type.Optional(Type.Union([Type.Literal("disabled"), Type.Literal("auto"), Type.Null()])),
    parallel_tool_calls: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
    ...SAMPLING_FIELDS,
  },
  { additionalProperties: true },
);

export type ResponsesBody = Static<typeof ResponsesBodySchema>;

/** Chat Completions fields that have another name here: sent to this route, a 400 naming the right one. */
const CHAT_ONLY: Record<string, string> = {
  messages: "input",
  max_tokens: "max_output_tokens",
  max_completion_tokens: "max_output_tokens",
  response_format: "text.format",
  functions: "tools",
  function_call: "tool_choice",
};

/** Responses fields this server does not do; refused by name unless absent, null or neutral. */
const REFUSED: Record<string, (v: unknown) => boolean> = {
  background: (v) => v === true,
  conversation: () => true,
  prompt: () => true,
  reasoning: (v) => isRecord(v) && Object.values(v).some((x) => x !== null && x !== undefined),
  // What an answer can include beyond its output: its text's log-probabilities, nothing else here.
  include: (v) => Array.isArray(v) && v.some((x) => x !== "message.output_text.logprobs"),
};

/** Output items of earlier answers, by id, for `item_reference` input items and `previous_response_id`. */
export interface ItemLookup {
  /** The conversation an earlier response ended with (its input and its output), or undefined. */
  response(id: string): readonly ChatMessage[] | undefined;
  /** An earlier output item, as the message it is in a conversation, or undefined. */
  item(id: string): ChatMessage | undefined;
}

/**
 * The chat body of a Responses request, and the conversation it ends with (for `previous_response_id` of a
 * later request). Throws a 400 naming the Responses field at fault.
 */
export function toChatBody(body: ResponsesBody, lookup: ItemLookup): { chat: ChatBody; messages: ChatMessage[] } {
  const raw = body as Record<string, unknown>;
  for (const [field, instead] of Object.entries(CHAT_ONLY)) {
    if (raw[field] !== undefined && raw[field] !== null) {
      throw errors.invalidRequest(
        `'${field}' is a Chat Completions parameter; the Responses API's is '${instead}'.`,
        field,
      );
    }
  }
  for (const [field, isSet] of Object.entries(REFUSED)) {
    if (raw[field] !== undefined && raw[field] !== null && isSet(raw[field])) {
      throw errors.invalidRequest(`The parameter '${field}' is not supported by this server.`, field);
    }
  }
  const earlier: ChatMessage[] = [];
  if (body.previous_response_id) {
    const found = lookup.response(body.previous_response_id);
    if (!found) {
      throw errors.invalidRequest(
        `No response '${echo(body.previous_response_id)}' is kept here: this server keeps recent responses in ` +
          "memory only (lost on restart). Send the whole conversation as input instead.",
        "previous_response_id",
      );
    }
    earlier.push(...found);
  }
  const input = typeof body.input === "string" ? [{ role: "user", content: body.input }] : body.input;
  const messages = [...earlier, ...readInput(input, lookup)];
  // The instructions are this request's system message; those of a previous response are not carried over.
  const conversation: ChatMessage[] = [
    ...(body.instructions ? [{ role: "system" as const, content: body.instructions }] : []),
    ...messages,
  ];
  const {
    input: _input,
    instructions: _instructions,
    max_output_tokens,
    text,
    tools,
    tool_choice,
    previous_response_id: _previous,
    store: _store,
    ...rest
  } = raw;
  const chat: Record<string, unknown> = { ...rest, messages: conversation, max_tokens: max_output_tokens };
  // Log-probabilities: asked by top_logprobs (0 to 20 alternatives) or by the include, as OpenAI's.
  const include = Array.isArray(raw.include) ? raw.include : [];
  delete chat.include;
  if (
    include.includes("message.output_text.logprobs") ||
    (typeof raw.top_logprobs === "number" && raw.top_logprobs > 0)
  ) {
    chat.logprobs = true;
    chat.top_logprobs = raw.top_logprobs ?? 0;
  } else delete chat.top_logprobs;
  const format = isRecord(text) ? text.format : undefined;
  if (format !== undefined && format !== null) chat.response_format = chatFormat(format);
  if (tools !== undefined && tools !== null) chat.tools = chatTools(tools);
  if (tool_choice !== undefined && tool_choice !== null) chat.tool_choice = chatToolChoice(tool_choice);
  return { chat: chat as unknown as ChatBody, messages };
}

/**
 * An error about the chat body, named as the Responses request names it (a field the translation renamed).
 * Other errors pass as they are.
 */
export function asResponsesError(err: unknown): unknown {
  if (!(err instanceof LucenaError) || err.param === null) return err;
  const rename = (s: string) =>
    s
      .replace(/tools\[(\d+)\]\.function\./g, "tools[$1].")
      .replace(/response_format\.json_schema/g, "text.format")
      .replace(/response_format/g, "text.format")
      .replace(/\bmax_tokens\b/g, "max_output_tokens");
  const param = rename(err.param);
  if (param === err.param) return err;
  return new LucenaError(err.code, rename(err.message), {
    param,
    retryAfterS: err.retryAfterS,
    limits: err.limits,
  });
}

function readInput(items: readonly unknown[], lookup: ItemLookup): ChatMessage[] {
  const out: ChatMessage[] = [];
  items.forEach((item, i) => {
    const at = `input[${i}]`;
    if (!isRecord(item)) throw errors.invalidRequest(`${at} must be an object.`, at);
    const type = item.type ?? (item.role !== undefined ? "message" : undefined);
    switch (type) {
      case "message": {
        const role = item.role;
        if (role !== "user" && role !== "system" && role !== "developer" && role !== "assistant") {
          throw errors.invalidRequest(`${at}.role must be 'user', 'system', 'developer' or 'assistant'.`, `${at}.role`);
        }
        const content = readContent(item.content, `${at}.content`, role === "assistant" ? "output_text" : "input_text");
        if (role === "assistant") out.push({ role: "assistant", content });
        else out.push({ role: role === "user" ? "user" : "system", content });
        return;
      }
      case "function_call": {
        const call = readCall(item, at);
        // Calls that follow an assistant message (its text, or other calls) are that message's calls.
        const last = out.at(-1);
        if (last?.role === "assistant") last.tool_calls = [...(last.tool_calls ?? []), call];
        else out.push({ role: "assistant", content: "", tool_calls: [call] });
        return;
      }
      case "function_call_output": {
        if (typeof item.call_id !== "string" || item.call_id === "") {
          throw errors.invalidRequest(`${at}.call_id must name the call this is the output of.`, `${at}.call_id`);
        }
        const output = readContent(item.output, `${at}.output`, "input_text");
        out.push({ role: "tool", tool_call_id: item.call_id, content: output });
        return;
      }
      case "item_reference": {
        const found = typeof item.id === "string" ? lookup.item(item.id) : undefined;
        if (!found) {
          throw errors.invalidRequest(
            `${at}: no item '${echo(String(item.id))}' is kept here: this server keeps recent output items in ` +
              "memory only (lost on restart). Send the item itself.",
            `${at}.id`,
          );
        }
        const last = out.at(-1);
        if (found.role === "assistant" && found.tool_calls && last?.role === "assistant")
          last.tool_calls = [...(last.tool_calls ?? []), ...found.tool_calls];
        else out.push(structuredClone(found));
        return;
      }
      default:
        throw errors.invalidRequest(
          `${at}.type ${typeof type === "string" ? `'${echo(type)}' ` : ""}is not supported: send messages, ` +
            "'function_call', 'function_call_output' or 'item_reference' items.",
          `${at}.type`,
        );
    }
  });
  return out;
}

function readCall(item: Record<string, unknown>, at: string): ToolCall {
  for (const field of ["call_id", "name", "arguments"] as const) {
    if (typeof item[field] !== "string" || (field !== "arguments" && item[field] === "")) {
      throw errors.invalidRequest(`${at}.${field} must be a string.`, `${at}.${field}`);
    }
  }
  return {
    id: item.call_id as string,
    type: "function",
    function: { name: item.name as string, arguments: item.arguments as string },
  };
}

/** A string, or parts of `partType` (and `refusal` parts of an assistant's text), joined as they are. */
function readContent(content: unknown, at: string, partType: "input_text" | "output_text"): string {
  if (typeof content === "string") return content;
  if (!Array.isArray(content) || content.length === 0) {
    throw errors.invalidRequest(`${at} must be a string or a non-empty array of '${partType}' parts.`, at);
  }
  return content
    .map((part, j) => {
      const where = `${at}[${j}]`;
      if (!isRecord(part)) throw errors.invalidRequest(`${where} must be a content part object.`, where);
      if (part.type === partType || (partType === "output_text" && part.type === "refusal")) {
        const text = part.type === "refusal" ? part.refusal : part.text;
        if (typeof text !== "string") throw errors.invalidRequest(`${where}.text must be a string.`, `${where}.text`);
        return text;
      }
      const type = typeof part.type === "string" ? `'${echo(part.type)}' ` : "";
      throw errors.invalidRequest(
        `${where}.type ${type}is not supported: this server reads '${partType}' parts only.`,
        `${where}.type`,
      );
    })
    .join("");
}

/** `text.format` as chat's response_format (the json_schema fields sit one level up here). */
function chatFormat(format: unknown): unknown {
  if (!isRecord(format)) return format; // chat's check names it
  if (format.type !== "json_schema") return format;
  const { type, name, schema, strict } = format;
  return { type, json_schema: { name, schema, strict } };
}

function chatTools(tools: unknown): unknown {
  if (!Array.isArray(tools)) return tools;
  return tools.map((t, i) => {
    if (!isRecord(t) || t.type !== "function") {
      const type = isRecord(t) && typeof t.type === "string" ? `'${echo(t.type)}' ` : "";
      throw errors.invalidRequest(
        `tools[${i}].type ${type}is not supported: this server runs no tools itself; send function tools.`,
        `tools[${i}].type`,
      );
    }
    const { type, name, description, parameters, strict } = t;
    return { type, function: { name, description, parameters, strict } };
  });
}

function chatToolChoice(choice: unknown): unknown {
  if (isRecord(choice) && choice.type === "function" && typeof choice.name === "string") {
    return { type: "function", function: { name: choice.name } };
  }
  return choice;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
