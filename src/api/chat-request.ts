import { Type, type Static, type TSchema } from "@sinclair/typebox";
import { echo, errors } from "../core/errors.js";
import type { OutputFormat, Sampling } from "../engines/engine.js";

const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);

/** The sampling fields of a chat body, which the Responses API's body takes too (with the same checks). */
export const SAMPLING_FIELDS = {
  temperature: Type.Optional(Nullable(Type.Number({ minimum: 0, maximum: 2 }))),
  top_p: Type.Optional(Nullable(Type.Number({ minimum: 0, maximum: 1 }))),
  top_k: Type.Optional(Nullable(Type.Integer({ minimum: 0 }))),
  stop: Type.Optional(
    Type.Union([
      Type.String({ minLength: 1 }),
      Type.Array(Type.String({ minLength: 1 }), { maxItems: 4 }),
      Type.Null(),
    ]),
  ),
  seed: Type.Optional(Nullable(Type.Integer({ minimum: -(2 ** 31), maximum: 2 ** 32 - 1 }))),
  presence_penalty: Type.Optional(Nullable(Type.Number({ minimum: -2, maximum: 2 }))),
  frequency_penalty: Type.Optional(Nullable(Type.Number({ minimum: -2, maximum: 2 }))),
  // llama.cpp's and vLLM's extensions that this server honours.
  min_p: Type.Optional(Nullable(Type.Number({ minimum: 0, maximum: 1 }))),
  ignore_eos: Type.Optional(Nullable(Type.Boolean())),
  repeat_penalty: Type.Optional(Nullable(Type.Number({ exclusiveMinimum: 0 }))),
  repeat_last_n: Type.Optional(Nullable(Type.Integer({ minimum: -1 }))),
  repetition_penalty: Type.Optional(Nullable(Type.Number({ exclusiveMinimum: 0 }))),
  shape: Type.Optional(Type.Union([Type.String({ minLength: 1 }), Type.Null()])),
};

/**
 * The body of POST /v1/chat/completions and POST /v1/tokens/count (the count accepts the same body, so the
 * same body counts the same prompt). Unknown fields that change nothing are accepted; `messages` is checked
 * in code, so that each error names the exact message and field.
 */
export const ChatBodySchema = Type.Object(
  {
    model: Type.String({ minLength: 1 }),
    messages: Type.Array(Type.Unknown(), { minItems: 1 }),
    stream: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
    stream_options: Type.Optional(
      Type.Union([Type.Object({ include_usage: Type.Optional(Type.Boolean()) }), Type.Null()]),
    ),
    max_tokens: Type.Optional(Nullable(Type.Integer({ minimum: 1 }))),
    max_completion_tokens: Type.Optional(Nullable(Type.Integer({ minimum: 1 }))),
    n: Type.Optional(Nullable(Type.Integer({ minimum: 1 }))),
    ...SAMPLING_FIELDS,
  },
  { additionalProperties: true },
);

export type ChatBody = Static<typeof ChatBodySchema>;

export type Role = "system" | "user" | "assistant" | "tool";

/** A call the assistant made, in OpenAI's shape (`arguments` is the JSON text of the call's arguments). */
export interface ToolCall {
  id: string;
  type: "function";
  function: { name: string; arguments: string };
}

/**
 * One message of the conversation, in OpenAI's field names, so that an upstream replica is sent it as it is:
 * an assistant message may carry the calls it made (`tool_calls`, its `content` then possibly empty), and a
 * `tool` message the result of one call (`tool_call_id`).
 */
export type ChatMessage =
  | { role: "system"; content: string }
  | { role: "user"; content: string }
  | { role: "assistant"; content: string; tool_calls?: ToolCall[] }
  | { role: "tool"; content: string; tool_call_id: string };

/** A function the model may call (`tools[].function`). */
export interface ToolDef {
  name: string;
  description: string;
  /** The arguments' JSON Schema (an object schema; `{"type":"object","properties":{}}` when none was given). */
  parameters: Readonly<Record<string, unknown>>;
  strict: boolean;
}

/**
 * The tools of a request that may call them: `choice` "auto" (the model decides), "required" (at least one
 * call), or one tool by name; `parallel`: more than one call in an answer. tool_choice "none" is no ToolSet:
 * the tools are then not shown to the model at all.
 */
export interface ToolSet {
  tools: ToolDef[];
  choice: "auto" | "required" | { name: string };
  parallel: boolean;
}

export interface SamplingRequest {
  maxTokens: number | null;
  temperature: number | null;
  topP: number | null;
  topK: number | null;
  stop: string[];
  seed: number | null;
  presencePenalty: number;
  frequencyPenalty: number;
  minP: number | null;
  repeatPenalty: Sampling["repeatPenalty"];
  ignoreEos: boolean;
  format: OutputFormat | null;
  tools: ToolSet | null;
  logitBias: ReadonlyMap<number, number> | null;
  logprobs: number | null;
}

const ROLES = new Set(["system", "user", "assistant", "developer", "tool"]);

/**
 * Fields that would change the answer and are not supported: rejected by name, never silently ignored.
 * A field is rejected only when set to something other than its neutral value.
 */
const UNSUPPORTED: Record<string, (v: unknown) => boolean> = {
  functions: (v) => Array.isArray(v) && v.length > 0,
  function_call: (v) => v !== "none" && v !== "auto",
  audio: () => true,
  modalities: (v) => !(Array.isArray(v) && v.every((m) => m === "text")),
  prediction: () => true,
  // llama.cpp's and vLLM's sampling and constraint extensions this server does not implement: refused unless
  // neutral, as any field that would change the answer.
  ...Object.fromEntries(["typical_p", "tfs_z", "length_penalty"].map((f) => [f, (v: unknown) => v !== 1])),
  ...Object.fromEntries(
    [
      "mirostat",
      "min_tokens",
      "top_a",
      "n_probs",
      "dynatemp_range",
      "xtc_probability",
      "dry_multiplier",
      "top_n_sigma",
    ].map((f) => [f, (v: unknown) => v !== 0]),
  ),
  mirostat_tau: () => false, // meaningful only with mirostat, which is refused
  mirostat_eta: () => false,
  use_beam_search: (v) => v === true,
  best_of: (v) => v !== 1,
  ...Object.fromEntries(
    ["guided_json", "guided_regex", "guided_choice", "guided_grammar", "structured_outputs"].map((f) => [
      f,
      (v: unknown) => v !== "" && !(typeof v === "object" && v !== null && Object.keys(v).length === 0),
    ]),
  ),
};

/** Checks what the schema cannot express; throws a 400 naming the parameter. */
export function checkUnsupported(body: Record<string, unknown>): void {
  for (const [field, isSet] of Object.entries(UNSUPPORTED)) {
    if (body[field] !== undefined && body[field] !== null && isSet(body[field])) {
      throw errors.invalidRequest(`The parameter '${field}' is not supported by this server.`, field);
    }
  }
  if (typeof body.n === "number" && body.n !== 1) {
    throw errors.invalidRequest("Only n=1 is supported.", "n");
  }
}

/** Validates `messages` and flattens text parts; `developer` is the OpenAI name for a system message. */
export function parseMessages(raw: unknown[]): ChatMessage[] {
  return raw.map((m, i) => {
    const at = `messages[${i}]`;
    if (typeof m !== "object" || m === null || Array.isArray(m)) {
      throw errors.invalidRequest(`${at} must be an object with 'role' and 'content'.`, at);
    }
    const msg = m as Record<string, unknown>;
    if (typeof msg.role !== "string" || !ROLES.has(msg.role)) {
      throw errors.invalidRequest(
        `${at}.role must be one of 'system', 'user', 'assistant' or 'tool'` +
          (typeof msg.role === "string" ? `; '${echo(msg.role)}' is not supported.` : "."),
        `${at}.role`,
      );
    }
    if (msg.function_call !== undefined && msg.function_call !== null) {
      throw errors.invalidRequest(`${at}.function_call is the legacy form: send tool_calls.`, `${at}.function_call`);
    }
    if (msg.role === "assistant") {
      const calls = msg.tool_calls === undefined || msg.tool_calls === null ? [] : parseToolCalls(msg.tool_calls, at);
      // An assistant message that only calls tools has no text: OpenAI sends its content as null.
      const content =
        calls.length > 0 && (msg.content === null || msg.content === undefined)
          ? ""
          : parseContent(msg.content, `${at}.content`);
      return calls.length > 0 ? { role: "assistant", content, tool_calls: calls } : { role: "assistant", content };
    }
    if (msg.tool_calls !== undefined && msg.tool_calls !== null) {
      throw errors.invalidRequest(`${at}.tool_calls: only an assistant message makes tool calls.`, `${at}.tool_calls`);
    }
    if (msg.role === "tool") {
      if (typeof msg.tool_call_id !== "string" || msg.tool_call_id === "") {
        throw errors.invalidRequest(
          `${at}.tool_call_id must name the call this is the result of.`,
          `${at}.tool_call_id`,
        );
      }
      return { role: "tool", content: parseContent(msg.content, `${at}.content`), tool_call_id: msg.tool_call_id };
    }
    const content = parseContent(msg.content, `${at}.content`);
    return msg.role === "user" ? { role: "user", content } : { role: "system", content };
  });
}

function parseToolCalls(raw: unknown, at: string): ToolCall[] {
  if (!Array.isArray(raw)) throw errors.invalidRequest(`${at}.tool_calls must be an array.`, `${at}.tool_calls`);
  return raw.map((c, j) => {
    const where = `${at}.tool_calls[${j}]`;
    if (!isRecord(c) || !isRecord(c.function)) {
      throw errors.invalidRequest(
        `${where} must be {"id", "type": "function", "function": {"name", "arguments"}}.`,
        where,
      );
    }
    if (c.type !== undefined && c.type !== "function") {
      throw errors.invalidRequest(`${where}.type must be 'function'.`, `${where}.type`);
    }
    if (typeof c.id !== "string" || c.id === "")
      throw errors.invalidRequest(`${where}.id must be a string.`, `${where}.id`);
    const { name, arguments: args } = c.function;
    if (typeof name !== "string" || name === "") {
      throw errors.invalidRequest(`${where}.function.name must be a string.`, `${where}.function.name`);
    }
    if (typeof args !== "string") {
      throw errors.invalidRequest(
        `${where}.function.arguments must be a string (JSON text).`,
        `${where}.function.arguments`,
      );
    }
    return { id: c.id, type: "function", function: { name, arguments: args } };
  });
}

/** OpenAI's function names. */
const TOOL_NAME = /^[a-zA-Z0-9_-]{1,64}$/;

/**
 * `tools`, `tool_choice` and `parallel_tool_calls`: the tools the model may call, or null when it may call none
 * (no tools, or tool_choice "none").
 */
export function parseTools(body: Record<string, unknown>): ToolSet | null {
  const raw = body.tools;
  const choice = body.tool_choice ?? "auto";
  if (raw === undefined || raw === null || (Array.isArray(raw) && raw.length === 0)) {
    if (choice !== "none" && choice !== "auto") {
      throw errors.invalidRequest("tool_choice needs tools to choose from.", "tool_choice");
    }
    return null;
  }
  if (!Array.isArray(raw)) throw errors.invalidRequest("tools must be an array.", "tools");
  const tools = raw.map((t, i): ToolDef => {
    const at = `tools[${i}]`;
    if (!isRecord(t) || t.type !== "function" || !isRecord(t.function)) {
      throw errors.invalidRequest(`${at} must be {"type": "function", "function": {"name", …}}.`, at);
    }
    const f = t.function;
    if (typeof f.name !== "string" || !TOOL_NAME.test(f.name)) {
      throw errors.invalidRequest(
        `${at}.function.name must be 1 to 64 letters, digits, '_' or '-'.`,
        `${at}.function.name`,
      );
    }
    if (f.description !== undefined && f.description !== null && typeof f.description !== "string") {
      throw errors.invalidRequest(`${at}.function.description must be a string.`, `${at}.function.description`);
    }
    const parameters = f.parameters ?? { type: "object", properties: {} };
    if (!isRecord(parameters)) {
      throw errors.invalidRequest(
        `${at}.function.parameters must be a JSON Schema object.`,
        `${at}.function.parameters`,
      );
    }
    return {
      name: f.name,
      description: typeof f.description === "string" ? f.description : "",
      parameters,
      strict: f.strict === true,
    };
  });
  const names = new Set<string>();
  for (const [i, t] of tools.entries()) {
    if (names.has(t.name)) {
      throw errors.invalidRequest(`tools[${i}]: the name '${t.name}' is given twice.`, `tools[${i}].function.name`);
    }
    names.add(t.name);
  }
  const parallel = body.parallel_tool_calls !== false;
  if (choice === "none") return null;
  if (choice === "auto" || choice === "required") return { tools, choice, parallel };
  if (isRecord(choice) && choice.type === "function" && isRecord(choice.function)) {
    const name = choice.function.name;
    if (typeof name === "string" && names.has(name)) return { tools, choice: { name }, parallel };
    throw errors.invalidRequest(
      `tool_choice names ${typeof name === "string" ? `'${echo(name)}'` : "no function"}, which is not in tools.`,
      "tool_choice",
    );
  }
  throw errors.invalidRequest(
    `tool_choice must be 'none', 'auto', 'required' or {"type": "function", "function": {"name": …}}.`,
    "tool_choice",
  );
}

function parseContent(content: unknown, at: string): string {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) {
    throw errors.invalidRequest(`${at} must be a string or an array of text parts.`, at);
  }
  if (content.length === 0) throw errors.invalidRequest(`${at} must not be an empty array.`, at);
  const texts = content.map((part, j) => {
    const p = part as Record<string, unknown> | null;
    if (typeof p !== "object" || p === null)
      throw errors.invalidRequest(`${at}[${j}] must be a content part object.`, `${at}[${j}]`);
    if (p.type !== "text") {
      const type = typeof p.type === "string" ? `'${echo(p.type)}' ` : "";
      throw errors.invalidRequest(
        `${at}[${j}]: content parts of type ${type}are not supported; only 'text' is.`,
        `${at}[${j}].type`,
      );
    }
    if (typeof p.text !== "string")
      throw errors.invalidRequest(`${at}[${j}].text must be a string.`, `${at}[${j}].text`);
    return p.text;
  });
  // Parts are one message split in pieces: joined as they are, with nothing added between them.
  return texts.join("");
}

export function parseSampling(body: ChatBody): SamplingRequest {
  const stop = body.stop == null ? [] : typeof body.stop === "string" ? [body.stop] : body.stop;
  return {
    maxTokens: body.max_completion_tokens ?? body.max_tokens ?? null,
    temperature: body.temperature ?? null,
    topP: body.top_p ?? null,
    topK: body.top_k ?? null,
    stop,
    seed: body.seed ?? null,
    presencePenalty: body.presence_penalty ?? 0,
    frequencyPenalty: body.frequency_penalty ?? 0,
    minP: body.min_p ?? null,
    repeatPenalty: parseRepeatPenalty(body),
    ignoreEos: body.ignore_eos ?? false,
    format: parseFormat(body),
    tools: parseTools(body),
    logitBias: parseLogitBias((body as Record<string, unknown>).logit_bias),
    logprobs: parseLogprobs(body),
  };
}

/**
 * OpenAI's `logprobs` (true: each answer token's log-probability) with `top_logprobs` (0 to 20 alternatives a
 * token); null when not asked.
 */
function parseLogprobs(body: ChatBody): number | null {
  const raw = body as Record<string, unknown>;
  const on = raw.logprobs ?? null;
  const top = raw.top_logprobs ?? null;
  if (on !== null && typeof on !== "boolean") throw errors.invalidRequest("logprobs must be a boolean.", "logprobs");
  if (top !== null && (typeof top !== "number" || !Number.isInteger(top) || top < 0 || top > 20))
    throw errors.invalidRequest("top_logprobs must be an integer from 0 to 20.", "top_logprobs");
  if (on !== true) {
    if (top !== null && top > 0) throw errors.invalidRequest("top_logprobs needs logprobs: true.", "top_logprobs");
    return null;
  }
  return top ?? 0;
}

/** llama.cpp's server's repeat_last_n when a request gives none. */
export const REPEAT_LAST_N_DEFAULT = 64;

/**
 * llama.cpp's `repeat_penalty` over its `repeat_last_n` window (−1: the whole context, 0: off), or vLLM's
 * `repetition_penalty`, which counts every token of prompt and answer; null when neutral. One of the two.
 */
function parseRepeatPenalty(body: ChatBody): Sampling["repeatPenalty"] {
  const llama = body.repeat_penalty ?? null;
  const vllm = body.repetition_penalty ?? null;
  if (llama !== null && vllm !== null) {
    throw errors.invalidRequest(
      "Send either 'repeat_penalty' (llama.cpp's) or 'repetition_penalty' (vLLM's), not both.",
      "repetition_penalty",
    );
  }
  if (vllm !== null) return vllm === 1 ? null : { penalty: vllm, lastN: -1, field: "repetition_penalty" };
  const penalty = llama ?? 1;
  const lastN = body.repeat_last_n ?? REPEAT_LAST_N_DEFAULT;
  // A window alone changes the answer only through the presence and frequency penalties it then bounds.
  const windowed =
    body.repeat_last_n != null && ((body.presence_penalty ?? 0) !== 0 || (body.frequency_penalty ?? 0) !== 0);
  if (lastN === 0 || (penalty === 1 && !windowed)) return null;
  return { penalty, lastN, field: "repeat_penalty" };
}

/**
 * OpenAI's `logit_bias`: token ids (as the object's keys) to a bias from −100 to 100 added to the token's logit;
 * null when absent or empty. Whether an id is in the model's vocabulary is the engine's to say.
 */
export function parseLogitBias(raw: unknown): ReadonlyMap<number, number> | null {
  if (raw === undefined || raw === null) return null;
  if (!isRecord(raw)) throw errors.invalidRequest("logit_bias must map token ids to biases.", "logit_bias");
  const out = new Map<number, number>();
  for (const [key, value] of Object.entries(raw)) {
    if (!/^\d{1,9}$/.test(key)) {
      throw errors.invalidRequest(`logit_bias: '${echo(key)}' is not a token id.`, "logit_bias");
    }
    if (typeof value !== "number" || !Number.isFinite(value) || value < -100 || value > 100) {
      throw errors.invalidRequest(
        `logit_bias: the bias of token ${key} must be a number from -100 to 100.`,
        "logit_bias",
      );
    }
    if (value !== 0) out.set(Number(key), value);
  }
  return out.size > 0 ? out : null;
}

/** OpenAI's json_schema names: what its API takes. */
const SCHEMA_NAME = /^[a-zA-Z0-9_-]{1,64}$/;

/**
 * The answer's format: OpenAI's `response_format`, or llama.cpp's `grammar` or `json_schema` fields. At most one
 * may constrain the answer.
 */
export function parseFormat(body: Record<string, unknown>): OutputFormat | null {
  const found: { field: string; format: OutputFormat }[] = [];
  const rf = body.response_format;
  if (rf !== undefined && rf !== null) {
    const format = parseResponseFormat(rf);
    if (format !== null) found.push({ field: "response_format", format });
  }
  if (body.grammar !== undefined && body.grammar !== null && body.grammar !== "") {
    if (typeof body.grammar !== "string") throw errors.invalidRequest("grammar must be a string (GBNF).", "grammar");
    found.push({ field: "grammar", format: { kind: "grammar", gbnf: body.grammar } });
  }
  const js = body.json_schema;
  if (js !== undefined && js !== null && !(isRecord(js) && Object.keys(js).length === 0)) {
    if (!isRecord(js)) throw errors.invalidRequest("json_schema must be a JSON Schema object.", "json_schema");
    found.push({
      field: "json_schema",
      format: { kind: "json_schema", schema: js, name: "json_schema", strict: true, field: "json_schema" },
    });
  }
  if (found.length > 1) {
    throw errors.invalidRequest(
      `Only one of ${found.map((f) => `'${f.field}'`).join(" and ")} may constrain the answer.`,
      found[1]!.field,
    );
  }
  return found[0]?.format ?? null;
}

function parseResponseFormat(rf: unknown): OutputFormat | null {
  const at = "response_format";
  if (!isRecord(rf)) throw errors.invalidRequest(`${at} must be an object with a 'type'.`, at);
  switch (rf.type) {
    case "text":
      return null;
    case "json_object":
      return { kind: "json_object" };
    case "json_schema": {
      const js = rf.json_schema;
      if (!isRecord(js)) {
        throw errors.invalidRequest(
          `${at}.json_schema must be an object with 'name' and 'schema'.`,
          `${at}.json_schema`,
        );
      }
      if (typeof js.name !== "string" || !SCHEMA_NAME.test(js.name)) {
        throw errors.invalidRequest(
          `${at}.json_schema.name must be 1 to 64 letters, digits, '_' or '-'.`,
          `${at}.json_schema.name`,
        );
      }
      if (js.strict !== undefined && js.strict !== null && typeof js.strict !== "boolean") {
        throw errors.invalidRequest(`${at}.json_schema.strict must be a boolean.`, `${at}.json_schema.strict`);
      }
      // OpenAI's default when no schema is given: any JSON object.
      const schema = js.schema === undefined || js.schema === null ? { type: "object" } : js.schema;
      if (!isRecord(schema)) {
        throw errors.invalidRequest(
          `${at}.json_schema.schema must be a JSON Schema object.`,
          `${at}.json_schema.schema`,
        );
      }
      return { kind: "json_schema", schema, name: js.name, strict: js.strict === true, field: "response_format" };
    }
    default: {
      const type = typeof rf.type === "string" ? `'${echo(rf.type)}'` : "missing";
      throw errors.invalidRequest(
        `${at}.type is ${type}: it must be 'text', 'json_object' or 'json_schema'.`,
        `${at}.type`,
      );
    }
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Tools as OpenAI's API takes them: what a replica is sent. */
export function wireTools(tools: readonly ToolDef[]): unknown[] {
  return tools.map((t) => ({
    type: "function",
    function: {
      name: t.name,
      ...(t.description ? { description: t.description } : {}),
      parameters: t.parameters,
      ...(t.strict ? { strict: true } : {}),
    },
  }));
}
