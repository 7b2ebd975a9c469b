import { setImmediate as nextTurn } from "node:timers/promises";
import {
  SpecialToken,
  type ChatHistoryItem,
  type ChatModelFunctionCall,
  type ChatModelFunctions,
  type ChatWrapper,
  type LlamaModel,
  type Token,
} from "node-llama-cpp";
import type { ChatMessage, ToolDef } from "../../api/chat-request.js";
import type { OverLimit } from "../../prompt/build.js";
import { errors } from "../../core/errors.js";

/**
 * Characters of plain text tokenized in one synchronous call. llama.cpp's tokenizer is synchronous and runs on
 * the event loop; measured here on 3.9 MB of mixed code and prose, 0.4 µs a character (the project's own
 * vocabulary), 0.6 (phi-3) and 1.2 (deepseek-coder), so a chunk takes at most about 10 ms and every other
 * request goes on between chunks.
 */
export const CHUNK_CHARS = 8192;
/** Text each side of a candidate split point that is tokenized to check the split changes nothing. */
const CHECK_CHARS = 256;
/** Candidate split points tried per chunk before splitting where the chunk ends. */
const CANDIDATES = 12;
/** Tokens of long texts kept between calls (counts and the completions that follow them, trimming steps). */
const MEMO_TOKENS = 1_000_000;

const trimmed = "trimLeadingSpace" as const;

/** How far a text has been tokenized: its tokens so far, and where the next chunk starts. */
interface Progress {
  readonly text: string;
  readonly tokens: Token[];
  offset: number;
  /** Set while a call extends it, so that two requests with the same text never tokenize it twice at once. */
  busy: Promise<void> | null;
}

/**
 * The conversation in the model's chat template, ending with the assistant's turn to speak, as tokens, tokenized
 * the way node-llama-cpp's `LlamaText.tokenize` does, except that:
 * - a long text is tokenized in chunks, with a turn of the event loop between them, split only where the
 *   tokens each side of the split are those of the whole (checked on the text around it), so the result is the
 *   whole text's tokenization; a text with no such point within a chunk's reach (no line breaks or spaces where a
 *   split is clean, e.g. one long run of one character) is split where the chunk ends, and only the few tokens at
 *   that split may differ from a whole-text tokenization. Counts and completions tokenize alike, so a count
 *   always equals the completion's prompt_tokens.
 * - with a `limit`, it stops once the prompt has more than `limit` tokens: a prompt that cannot fit costs the
 *   work of its first `limit` tokens, not of the whole body.
 * - long texts' tokens are kept (up to MEMO_TOKENS), so the trimming steps of one request, and a count followed
 *   by its completion, tokenize each message once.
 */
export class PromptTokenizer {
  private readonly memo = new Map<string, Progress>();
  private memoTokens = 0;

  constructor(
    private readonly model: LlamaModel,
    private readonly chatWrapper: ChatWrapper,
  ) {}

  /**
   * `tools`: the functions the model may call, shown to it the way its chat template (or node-llama-cpp's chat
   * wrapper for its family) shows them; null: none.
   */
  async encode(
    messages: readonly ChatMessage[],
    limit = Infinity,
    tools: readonly ToolDef[] | null = null,
  ): Promise<Token[] | OverLimit> {
    const history = chatHistory(messages);
    // The assistant's turn, to be generated. After tool results it is the same turn, going on: node-llama-cpp
    // renders a call's result inside the model's response, and what the model writes next follows it there.
    const last = history.at(-1);
    const afterCalls = last?.type === "model" && isCall(last.response.at(-1));
    if (!afterCalls) history.push({ type: "model", response: [] });
    const { contextText } = this.chatWrapper.generateContextState({
      chatHistory: history,
      ...(tools !== null && tools.length > 0
        ? { availableFunctions: availableFunctions(tools), documentFunctionParams: true }
        : {}),
    });

    const out: Token[] = [];
    let text = "";
    // Texts whose tokens are kept cost no tokenizing, but looking them up and copying their tokens still takes
    // time: a long conversation gives the event loop a turn every few chunks' worth of text.
    let sinceTurn = 0;
    const flush = async (): Promise<boolean> => {
      if (text === "") return true;
      sinceTurn += text.length;
      if (sinceTurn > 4 * CHUNK_CHARS) {
        sinceTurn = 0;
        await nextTurn();
      }
      const tokens = await this.plain(text, limit - out.length);
      text = "";
      for (const t of tokens) out.push(t);
      return out.length <= limit;
    };
    for (const value of contextText.values) {
      if (typeof value === "string") {
        text += value;
        continue;
      }
      const hadContent = out.length > 0 || text !== "";
      if (!(await flush())) return { atLeast: out.length };
      const tokens =
        value instanceof SpecialToken
          ? value.tokenize(this.model.tokenizer)
          : value.tokenize(this.model.tokenizer, hadContent);
      for (const t of tokens) out.push(t);
    }
    if (!(await flush())) return { atLeast: out.length };
    return out.length <= limit ? out : { atLeast: out.length };
  }

  /**
   * A raw prompt's tokens (legacy completions), as llama.cpp's server tokenizes one: the model's BOS when it
   * adds one, and special tokens written in the text read as those tokens. With `suffix`, fill-in-the-middle in
   * llama.cpp's order: [BOS] FIM_PRE prefix FIM_SUF suffix FIM_MID, with the model's own FIM tokens; a model
   * without them is a 400. Long texts are tokenized in chunks, as chat prompts are.
   */
  async encodeText(prompt: string | readonly number[], suffix: string | null, limit = Infinity): Promise<Token[]> {
    const bos =
      this.model.tokens.shouldPrependBosToken && this.model.tokens.bos !== null ? [this.model.tokens.bos] : [];
    const text = async (t: string | readonly number[], special: boolean) =>
      typeof t === "string" ? (t === "" ? [] : await this.plain(t, limit, special)) : (t as Token[]);
    if (suffix === null) {
      const tokens = await text(prompt, true);
      // A prompt given as tokens is the client's own: nothing is added.
      return typeof prompt === "string" && tokens[0] !== bos[0] ? [...bos, ...tokens] : [...tokens];
    }
    const { prefix: pre, suffix: suf, middle: mid } = this.model.tokens.infill;
    if (pre === null || suf === null || mid === null) {
      throw errors.invalidRequest(
        "This model has no fill-in-the-middle tokens (its GGUF names no FIM prefix, suffix and middle tokens), " +
          "so a completion with a 'suffix' cannot be served.",
        "suffix",
      );
    }
    return [...bos, pre, ...(await text(prompt, false)), suf, ...(await text(suffix, false)), mid];
  }

  /**
   * A plain text's tokens (trimLeadingSpace, as LlamaText gives every plain text), or at least `limit + 1` of them;
   * `special`: text that spells a special token is read as that token.
   */
  private async plain(text: string, limit: number, special = false): Promise<Token[]> {
    if (text.length <= CHUNK_CHARS) return this.tokenize(text, special);
    const key = special ? `\u0001${text}` : text;
    let p = this.memo.get(key);
    if (p) {
      this.memo.delete(key); // most recently used last
      this.memo.set(key, p);
    } else {
      p = { text, tokens: [], offset: 0, busy: null };
      this.memo.set(key, p);
    }
    while (p.offset < text.length && p.tokens.length <= limit) {
      while (p.busy) await p.busy;
      if (p.offset >= text.length || p.tokens.length > limit) break;
      let done!: () => void;
      p.busy = new Promise<void>((r) => (done = r));
      try {
        await nextTurn();
        const end = this.splitPoint(text, p.offset, special);
        const tokens = this.tokenize(text.slice(p.offset, end), special);
        for (const t of tokens) p.tokens.push(t);
        this.memoTokens += tokens.length;
        p.offset = end;
      } finally {
        p.busy = null;
        done();
      }
    }
    this.evict();
    return p.tokens;
  }

  private tokenize(text: string, special = false): Token[] {
    return this.model.tokenize(text, special, trimmed);
  }

  /**
   * Where the chunk starting at `from` ends: the first clean split point at or after a chunk's length (the start
   * of a line, else a space before a word), checked by tokenizing the text around it.
   */
  private splitPoint(text: string, from: number, special: boolean): number {
    const target = from + CHUNK_CHARS;
    if (target >= text.length) return text.length;
    const reach = Math.min(text.length, target + CHUNK_CHARS);
    let tried = 0;
    for (const clean of [startOfLine, spaceBeforeWord]) {
      for (let at = target; at < reach && tried < CANDIDATES; at++) {
        if (!clean(text, at)) continue;
        tried++;
        if (this.splitsCleanly(text, at, special)) return at;
      }
    }
    // No clean point: split where the chunk ends, never inside a UTF-16 surrogate pair.
    const code = text.charCodeAt(target - 1);
    return code >= 0xd800 && code <= 0xdbff ? target + 1 : target;
  }

  private splitsCleanly(text: string, at: number, special: boolean): boolean {
    const left = text.slice(Math.max(0, at - CHECK_CHARS), at);
    const right = text.slice(at, at + CHECK_CHARS);
    const whole = this.tokenize(left + right, special);
    const a = this.tokenize(left, special);
    const b = this.tokenize(right, special);
    if (whole.length !== a.length + b.length) return false;
    for (let i = 0; i < a.length; i++) if (whole[i] !== a[i]) return false;
    for (let i = 0; i < b.length; i++) if (whole[a.length + i] !== b[i]) return false;
    return true;
  }

  /** Drops the least recently used texts' tokens beyond MEMO_TOKENS (never one being extended). */
  private evict(): void {
    for (const [key, p] of this.memo) {
      if (this.memoTokens <= MEMO_TOKENS) break;
      if (p.busy) continue;
      this.memo.delete(key);
      this.memoTokens -= p.tokens.length;
    }
  }
}

/** The functions as node-llama-cpp's chat wrappers take them. */
export function availableFunctions(tools: readonly ToolDef[]): ChatModelFunctions {
  const functions: Record<string, ChatModelFunctions[string]> = {};
  for (const t of tools) {
    functions[t.name] = {
      ...(t.description ? { description: t.description } : {}),
      params: t.parameters as ChatModelFunctions[string]["params"],
    };
  }
  return functions;
}

/**
 * The conversation as node-llama-cpp's chat history. A call and its result are one item there (the model's
 * function call, with `result`): each tool message is joined to the call of the assistant message before it that
 * has its id. A tool message with no such call (its call trimmed away, or never sent) is shown as the user's
 * text, so nothing the client sent is lost.
 */
export function chatHistory(messages: readonly ChatMessage[]): ChatHistoryItem[] {
  const history: ChatHistoryItem[] = [];
  const open = new Map<string, ChatModelFunctionCall>();
  for (const m of messages) {
    if (m.role === "system") history.push({ type: "system", text: m.content });
    else if (m.role === "user") history.push({ type: "user", text: m.content });
    else if (m.role === "assistant") {
      const response: (string | ChatModelFunctionCall)[] = m.content ? [m.content] : [];
      open.clear();
      for (const [i, call] of (m.tool_calls ?? []).entries()) {
        const item: ChatModelFunctionCall = {
          type: "functionCall",
          name: call.function.name,
          params: parseArguments(call.function.arguments),
          result: "",
          ...(i === 0 ? { startsNewChunk: true } : {}),
        };
        open.set(call.id, item);
        response.push(item);
      }
      history.push({ type: "model", response });
    } else {
      const call = open.get(m.tool_call_id);
      if (call) call.result = m.content;
      else history.push({ type: "user", text: m.content });
    }
  }
  return history;
}

function isCall(item: unknown): item is ChatModelFunctionCall {
  return typeof item === "object" && item !== null && (item as { type?: unknown }).type === "functionCall";
}

/** A call's arguments as the template shows them: the parsed JSON, or the text itself when it is not JSON. */
function parseArguments(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

const isSpace = (c: string | undefined) => c === " " || c === "\t" || c === "\n" || c === "\r";

/** After a line break, before a character that is not white space. */
function startOfLine(text: string, at: number): boolean {
  return text[at - 1] === "\n" && !isSpace(text[at]);
}

/** Before a single space that follows a non-space and precedes a non-space (" word"). */
function spaceBeforeWord(text: string, at: number): boolean {
  return text[at] === " " && !isSpace(text[at - 1]) && !isSpace(text[at + 1]);
}
