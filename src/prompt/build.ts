import type { ChatMessage, ToolDef } from "../api/chat-request.js";
import type { ModelConfig, ShapeConfig } from "../config/schema.js";
import { echo, errors } from "../core/errors.js";

/** The tools shown to the model with the conversation (they take room in the prompt), or null. */
export type Tools = readonly ToolDef[] | null;

/** An encoding that stopped early: the prompt has at least `atLeast` tokens, more than the limit it was given. */
export interface OverLimit {
  readonly atLeast: number;
}

/** Applies a model's chat template (ending with the assistant's turn) and tokenizes the result. */
export interface PromptEncoder {
  readonly kind: "tokenizer";
  /**
   * The prompt's tokens. With a `limit`, an encoder may stop once the prompt has more than `limit` tokens and
   * return how many it has found so far: a prompt that cannot fit is then never tokenized whole.
   */
  encode(
    messages: readonly ChatMessage[],
    limit?: number,
    tools?: Tools,
  ): number[] | OverLimit | Promise<number[] | OverLimit>;
  /**
   * A raw prompt's tokens, without the chat template (legacy completions); with `suffix`, the model's
   * fill-in-the-middle form (a 400 naming `suffix` for a model without FIM tokens). May stop past `limit`.
   */
  encodeText?(prompt: string | readonly number[], suffix: string | null, limit?: number): Promise<number[]>;
}

/** A prompt's encoding for the planner: the tokens, or a lower bound on their number past the budget. */
type Encoded = number[] | OverLimit;
const encodedLength = (e: Encoded): number => (Array.isArray(e) ? e.length : e.atLeast);

/**
 * Counts the tokens the templated conversation (ending with the assistant's turn) takes, where the model runs
 * elsewhere and only the count is needed here (an upstream's tokenize endpoint, or a local vocabulary file).
 */
export interface PromptCounter {
  readonly kind: "counter";
  count(messages: readonly ChatMessage[], tools?: Tools): Promise<number>;
  /**
   * A cheap upper bound on `count`, when the counter has one. When the bound already fits the budget, a
   * completion needs no exact count: nothing would be trimmed, and the model reports the exact figure in its usage.
   */
  bound?(messages: readonly ChatMessage[], tools?: Tools): number;
  /**
   * For a model whose server trims prompts itself (another Lucena One server): the count of what that server
   * keeps of `messages`, given the completion's max_tokens (its trimming reserves room for them), and how many
   * of the messages it keeps. Counting then agrees with what the server will evaluate, trimming included.
   */
  countKept?(messages: readonly ChatMessage[], maxTokens: number | null, tools?: Tools): Promise<KeptCount>;
}

export interface KeptCount {
  tokens: number;
  /** How many of the messages counted the server keeps. */
  kept: number;
}

export type SystemPromptSource = "request" | "shape" | "default" | "none";

export interface PromptRequest {
  messages: readonly ChatMessage[];
  /** The request's `shape`, if any. */
  shape: string | null;
  /** The request's max_tokens (or max_completion_tokens), if any. */
  maxTokens: number | null;
  /** The tools the model may call: rendered into the prompt, never trimmed. */
  tools: Tools;
}

export interface CountedPrompt {
  /** The prompt's length in tokens. */
  promptTokens: number;
  /** The conversation as sent to the model: the resolved system prompt, then the messages kept after trimming. */
  messages: ChatMessage[];
  /** How many of the request's own messages remain in the prompt after trimming. */
  keptMessages: number;
  systemPromptSource: SystemPromptSource;
  shapeId: string | null;
  shape: ShapeConfig | null;
  /** The most tokens the completion may generate. */
  maxOutputTokens: number;
}

export interface BuiltPrompt extends CountedPrompt {
  tokens: number[];
}

/**
 * A prompt as the engine that answers it takes it: its tokens, where the model's tokenizer runs here; else the
 * conversation, with its count (`estimated`: an upper bound, the counter's, stood in for the count).
 */
export type PromptInput =
  | { kind: "tokens"; tokens: number[] }
  | { kind: "messages"; messages: readonly ChatMessage[]; estimated: boolean }
  /** A raw prompt (legacy completions) for a replica, which tokenizes it; its count is the replica's. */
  | { kind: "text"; prompt: string | readonly number[] };

export interface PreparedPrompt extends CountedPrompt {
  input: PromptInput;
}

/**
 * The tokens reserved for the answer when deciding how much prompt fits: the request's max_tokens, or
 * else a quarter of the allocated context, capped by the model's output limit.
 */
export function outputReserve(model: ModelConfig, contextSize: number, requested: number | null): number {
  return requested ?? Math.max(1, Math.min(model.max_output_tokens, Math.floor(contextSize / 4)));
}

/**
 * The one prompt builder behind both /v1/chat/completions and /v1/tokens/count: resolve the system prompt
 * (request → shape → model default), trim the oldest whole messages to the budget, template, tokenize.
 *
 * Budget: prompt tokens ≤ min(max_input_tokens, context_size − reserve), with `reserve` as in
 * {@link outputReserve}. The system prompt and the last user message (and what follows it) are never dropped.
 */
export async function buildPrompt(
  model: ModelConfig,
  contextSize: number,
  encoder: PromptEncoder,
  req: PromptRequest,
): Promise<BuiltPrompt> {
  const plan = planPrompt<Encoded>(model, contextSize, req, encodedLength);
  let step = plan.next();
  while (!step.done) step = plan.next(await encoder.encode(step.value.messages, step.value.budget, req.tools));
  const { encoded, ...built } = step.value;
  // The planner returns only a prompt that fits the budget, and an encoder stops early only past it.
  if (!Array.isArray(encoded)) throw new Error("the prompt planner returned a prompt over its budget");
  return { ...built, tokens: encoded };
}

/**
 * {@link buildPrompt} for a model whose tokens are counted elsewhere: the same rules, one count per step.
 * Unless `exact`, a counter's upper bound that fits the budget stands in for the count (`estimated` is then
 * true) where the output limit does not depend on it: the prompt is the one an exact count would keep,
 * untrimmed, and the model reports the exact count in its usage.
 */
export async function countPrompt(
  model: ModelConfig,
  contextSize: number,
  counter: PromptCounter,
  req: PromptRequest,
  exact = true,
): Promise<CountedPrompt & { estimated: boolean }> {
  if (!exact && counter.bound) {
    const quick = planPrompt<number>(model, contextSize, req, (n) => n);
    const first = quick.next();
    if (!first.done) {
      const settled = quick.next(counter.bound(first.value.messages, req.tools));
      // Taken only where the output limit does not hang on the exact count: max_tokens is given (by the request
      // or its shape), or the model's output limit binds even at the bound.
      const outputKnown = (v: CountedPrompt) =>
        (req.maxTokens ?? v.shape?.max_tokens ?? model.default_max_tokens) !== null ||
        v.maxOutputTokens === model.max_output_tokens;
      if (settled.done && outputKnown(settled.value)) {
        const { encoded: _bound, ...built } = settled.value;
        return { ...built, estimated: true };
      }
    }
  }
  if (counter.countKept)
    return { ...(await countKept(model, contextSize, counter.countKept.bind(counter), req)), estimated: false };
  const plan = planPrompt<number>(model, contextSize, req, (n) => n);
  let step = plan.next();
  while (!step.done) step = plan.next(await counter.count(step.value.messages, req.tools));
  const { encoded: _count, ...built } = step.value;
  return { ...built, estimated: false };
}

/**
 * {@link countPrompt} through a server that trims too: its count is of what it keeps, so the rules here trim
 * only what that server would not; the messages it drops are the oldest of those sent (the same rule), and
 * `keptMessages` is what remains of the request's after both.
 */
async function countKept(
  model: ModelConfig,
  contextSize: number,
  countKept: NonNullable<PromptCounter["countKept"]>,
  req: PromptRequest,
): Promise<CountedPrompt> {
  // The server reserves room for the same max_tokens as the completion will send it, when the request (or its
  // shape) gives one; otherwise both use its default reserve. Unknown shapes are refused by the plan below.
  const shapeId = req.shape ?? model.default_shape;
  const shapeMax =
    shapeId !== null && Object.hasOwn(model.shapes, shapeId) ? model.shapes[shapeId]?.max_tokens : undefined;
  const maxTokens = req.maxTokens ?? shapeMax ?? model.default_max_tokens;
  const plan = planPrompt<KeptCount>(model, contextSize, req, (c) => c.tokens);
  let step = plan.next();
  while (!step.done) step = plan.next(await countKept(step.value.messages, maxTokens, req.tools));
  const { encoded, ...built } = step.value;
  const droppedThere = Math.max(0, built.messages.length - encoded.kept);
  return { ...built, keptMessages: Math.max(0, built.keptMessages - droppedThere) };
}

/**
 * The prompt for an engine, whichever way it measures prompts. `exact: false` (completions) lets a counted model
 * skip its count when a bound shows the prompt fits.
 */
export async function preparePrompt(
  model: ModelConfig,
  contextSize: number,
  encoder: PromptEncoder | PromptCounter,
  req: PromptRequest,
  exact = true,
): Promise<PreparedPrompt> {
  if (encoder.kind === "tokenizer") {
    const { tokens, ...built } = await buildPrompt(model, contextSize, encoder, req);
    return { ...built, input: { kind: "tokens", tokens } };
  }
  const { estimated, ...counted } = await countPrompt(model, contextSize, encoder, req, exact);
  return { ...counted, input: { kind: "messages", messages: counted.messages, estimated } };
}

/**
 * The model's shape of this name; 400 naming it (cut, as every echoed client string) when it has none. Only the
 * shapes' own names count: "__proto__", "constructor" or "toString" are names a client may send, not shapes.
 */
function shapeOf(model: ModelConfig, id: string): ShapeConfig {
  const shape = Object.hasOwn(model.shapes, id) ? model.shapes[id] : undefined;
  if (shape !== undefined) return shape;
  const known = Object.keys(model.shapes);
  throw errors.invalidRequest(
    `Unknown shape '${echo(id)}' for model '${model.id}'. Available shapes: ${known.length ? known.join(", ") : "none"}.`,
    "shape",
  );
}

/**
 * The rules, written once for both builders: yields each message list to encode, with the budget past which its
 * exact size no longer matters, and takes back its encoding (`length` tells its size in tokens, or a lower bound
 * when that is over the budget), returning the prompt that fits.
 */
function* planPrompt<E>(
  model: ModelConfig,
  contextSize: number,
  req: PromptRequest,
  length: (encoded: E) => number,
): Generator<{ messages: ChatMessage[]; budget: number }, CountedPrompt & { encoded: E }, E> {
  const shapeId = req.shape ?? model.default_shape;
  const shape = shapeId === null ? null : shapeOf(model, shapeId);

  // The request's, else its shape's, else the model's default; none: as much as the context leaves (OpenAI's).
  const requested = req.maxTokens ?? shape?.max_tokens ?? model.default_max_tokens;
  if (requested !== null && requested > model.max_output_tokens) {
    throw errors.invalidRequest(
      `max_tokens is ${requested}, above this model's output limit of ${model.max_output_tokens}.`,
      "max_tokens",
    );
  }
  const reserve = outputReserve(model, contextSize, requested);
  const budget = Math.min(model.max_input_tokens, contextSize - reserve);
  if (budget <= 0) {
    throw errors.invalidRequest(
      `max_tokens ${requested} leaves no room for a prompt in this model's context of ${contextSize} tokens.`,
      "max_tokens",
    );
  }

  let systemPromptSource: SystemPromptSource = "none";
  let preamble: ChatMessage[] = [];
  if (req.messages.some((m) => m.role === "system")) systemPromptSource = "request";
  else if (shape?.system_prompt !== undefined) {
    systemPromptSource = "shape";
    preamble = [{ role: "system", content: shape.system_prompt }];
  } else if (model.system_prompt !== null) {
    systemPromptSource = "default";
    preamble = [{ role: "system", content: model.system_prompt }];
  }

  // Droppable: non-system messages before the last user message, oldest first.
  let lastUser = -1;
  req.messages.forEach((m, i) => {
    if (m.role === "user") lastUser = i;
  });
  if (lastUser === -1) lastUser = req.messages.length - 1;
  const droppable: number[] = [];
  req.messages.forEach((m, i) => {
    if (i < lastUser && m.role !== "system") droppable.push(i);
  });

  const keeping = (k: number): ChatMessage[] => {
    const dropped = new Set(droppable.slice(0, k));
    return [...preamble, ...req.messages.filter((_, i) => !dropped.has(i))];
  };

  let dropped = 0;
  let messages = keeping(0);
  let encoded = yield { messages, budget };
  if (length(encoded) > budget) {
    const minimalMessages = keeping(droppable.length);
    const minimal = yield { messages: minimalMessages, budget };
    if (length(minimal) > budget) {
      // An encoder that stopped early knows only that the prompt is longer than the budget.
      const partial = typeof minimal === "object" && minimal !== null && !Array.isArray(minimal);
      const needs = partial ? `at least ${length(minimal)}` : `${length(minimal)}`;
      throw errors.invalidRequest(
        `The prompt needs ${needs} tokens even after trimming older messages, but at most ${budget} fit ` +
          `(input limit ${model.max_input_tokens}, context ${contextSize}, ${reserve} reserved for the answer).`,
        "messages",
      );
    }
    // Fewest messages dropped that fit: dropping more never makes the prompt longer.
    let lo = 1;
    let hi = droppable.length;
    [messages, encoded, dropped] = [minimalMessages, minimal, droppable.length];
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const m = keeping(mid);
      const e = yield { messages: m, budget };
      if (length(e) <= budget) {
        hi = mid;
        [messages, encoded, dropped] = [m, e, mid];
      } else lo = mid + 1;
    }
    if (dropped !== lo) {
      messages = keeping(lo);
      encoded = yield { messages, budget };
      dropped = lo;
    }
  }

  const promptTokens = length(encoded);
  return {
    encoded,
    promptTokens,
    messages,
    keptMessages: req.messages.length - dropped,
    systemPromptSource,
    shapeId,
    shape,
    maxOutputTokens: requested ?? Math.min(model.max_output_tokens, contextSize - promptTokens),
  };
}
