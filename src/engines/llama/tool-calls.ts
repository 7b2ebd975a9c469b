import { LlamaText, SpecialTokensText, type ChatWrapper } from "node-llama-cpp";
import type { ToolSet } from "../../api/chat-request.js";
import { GrammarBuilder, literal, SchemaRefusal } from "../../structured/json-grammar.js";
import { errors } from "../../core/errors.js";

/**
 * How a model writes its tool calls, as its chat wrapper knows it (node-llama-cpp's `settings.functions`): the
 * wrapper for its family (Qwen 2.5's and Hermes' `<tool_call>{"name": …, "arguments": …}</tool_call>`, Llama
 * 3.1's `<function=name>{…}</function>`, Mistral's `[TOOL_CALLS][{"name": …, "arguments": …}]`, …), the syntax
 * node-llama-cpp reads out of the model's own Jinja template when it renders tool calls, or, for a template that
 * knows no tools, node-llama-cpp's generic one. A call is written
 *   [sectionPrefix] prefix NAME paramsPrefix ARGUMENTS suffix ( betweenCalls prefix NAME … suffix )* [sectionSuffix]
 */
export interface ToolSyntax {
  /** What starts the calls: sectionPrefix + prefix (leading white space dropped: a model may or may not write it). */
  trigger: string;
  prefix: string;
  paramsPrefix: string;
  suffix: string;
  /** Between two calls of one answer, when the format has parallel calls (null: one call an answer). */
  between: string | null;
  sectionSuffix: string;
}

/**
 * A wrapper setting's text, special tokens written as their text. Built-in special tokens (EOS and the like) are
 * left out: they end the answer, which the engine sees as its end.
 */
function textOf(value: string | LlamaText | undefined): string {
  if (value === undefined) return "";
  const text = LlamaText(value);
  return text.values.map((v) => (typeof v === "string" ? v : v instanceof SpecialTokensText ? v.value : "")).join("");
}

export function toolSyntax(wrapper: ChatWrapper): ToolSyntax {
  const { call, parallelism, result } = wrapper.settings.functions;
  const sectionPrefix = textOf(parallelism?.call.sectionPrefix);
  const prefix = textOf(call.prefix);
  const paramsPrefix = textOf(call.paramsPrefix);
  return {
    trigger: (sectionPrefix + prefix).trimStart(),
    prefix,
    paramsPrefix,
    suffix: textOf(call.suffix) || closing(prefix + paramsPrefix, textOf(result.prefix)),
    between: parallelism ? textOf(parallelism.call.betweenCalls) : null,
    sectionSuffix: textOf(parallelism?.call.sectionSuffix),
  };
}

/**
 * What closes a call whose syntax, as read out of a Jinja template, has no suffix: node-llama-cpp puts the text
 * between a call's arguments and its result into the result's prefix. Llama 3.1's template writes a call as
 * `{"name": "…", "parameters": {…}}` followed by the turn's end, so the closing brace is found at the start of
 * the result's prefix; it belongs to the call, which the model writes before it ends its turn.
 */
function closing(opening: string, resultPrefix: string): string {
  let open = 0;
  for (const c of opening) open += c === "{" || c === "[" ? 1 : c === "}" || c === "]" ? -1 : 0;
  let out = "";
  for (const c of resultPrefix) {
    if (out.length >= open || (c !== "}" && c !== "]")) break;
    out += c;
  }
  return out;
}

/**
 * The grammar of what follows the trigger: one call or more (`parallel`), each to one of the tools (or the one
 * named by tool_choice) with arguments valid against its parameters; `forced` puts the trigger first, so the
 * answer is calls from its first token (tool_choice "required" or a named tool). A parameters schema the grammar
 * cannot follow is a 400 naming the tool.
 */
export function toolCallGrammar(syntax: ToolSyntax, set: ToolSet, forced: boolean): string {
  const g = new GrammarBuilder();
  const tools =
    typeof set.choice === "object"
      ? set.tools.filter((t) => t.name === (set.choice as { name: string }).name)
      : set.tools;
  const alternatives = tools.map((tool, i) => {
    let args: string;
    try {
      args = g.value(tool.parameters);
    } catch (err) {
      if (!(err instanceof SchemaRefusal)) throw err;
      const param = `tools[${set.tools.indexOf(tool)}].function.parameters`;
      throw errors.invalidRequest(`${param}: ${err.message}`, param);
    }
    return `${literal(tool.name)} ${literal(syntax.paramsPrefix)} ${g.rule(`args-${i}`, args)} ${literal(syntax.suffix)}`;
  });
  const call = g.rule("call", alternatives.join(" | "));
  const more = set.parallel && syntax.between !== null ? ` (${literal(syntax.between + syntax.prefix)} ${call})*` : "";
  const end = syntax.sectionSuffix ? ` ${literal(syntax.sectionSuffix)}?` : "";
  const start = forced ? `${literal(syntax.trigger)} ` : "";
  return g.format(`${start}${call}${more}${end}`);
}

export interface ParsedCall {
  name: string;
  /** The arguments' JSON text, as the model wrote it. */
  arguments: string;
}

/** A piece of call `index`: its name (the call's first piece), or more of its arguments' JSON text. */
export interface CallPiece {
  index: number;
  name?: string;
  arguments?: string;
}

/**
 * Reads calls as their text is generated, so that they stream: a call's name once it is whole, then its
 * arguments as they come, to the end of their JSON value, then the suffix and the next call. The grammar has
 * held the model to the syntax, so this reads it without guessing: the longest tool name followed by
 * paramsPrefix. `afterTrigger: false`: the text starts with the trigger (a forced call), which is skipped first.
 * Text that cannot be calls stops the reading (`stopped`).
 */
export class CallReader {
  private text = "";
  private pos = 0;
  private state: "trigger" | "name" | "args" | "after" | "stopped" = "name";
  private index = -1;
  /** Where the current call's arguments start (-1 until their first character), and how far they are sent. */
  private argsStart = -1;
  private argsSent = 0;
  private readonly names: string[];

  constructor(
    private readonly syntax: ToolSyntax,
    names: readonly string[],
    afterTrigger = true,
  ) {
    this.names = [...names].sort((a, b) => b.length - a.length);
    if (!afterTrigger) this.state = "trigger";
  }

  /** Calls begun so far. */
  get calls(): number {
    return this.index + 1;
  }

  get stopped(): boolean {
    return this.state === "stopped";
  }

  push(chunk: string): CallPiece[] {
    this.text += chunk;
    const out: CallPiece[] = [];
    for (let progress = true; progress;) progress = this.step(out);
    return out;
  }

  /** One move of the reader; false when it must wait for more text (or has stopped). */
  private step(out: CallPiece[]): boolean {
    const rest = this.text.slice(this.pos);
    const { syntax } = this;
    switch (this.state) {
      case "trigger": {
        const start = rest.trimStart();
        if (start.startsWith(syntax.trigger)) {
          this.pos += rest.length - start.length + syntax.trigger.length;
          this.state = "name";
          return true;
        }
        if (!syntax.trigger.startsWith(start)) this.state = "stopped";
        return false;
      }
      case "name": {
        const name = this.names.find((n) => rest.startsWith(n + syntax.paramsPrefix));
        if (name !== undefined) {
          this.index++;
          out.push({ index: this.index, name });
          this.pos += name.length + syntax.paramsPrefix.length;
          this.state = "args";
          this.argsStart = -1;
          return true;
        }
        if (!this.names.some((n) => (n + syntax.paramsPrefix).startsWith(rest))) this.state = "stopped";
        return false;
      }
      case "args": {
        if (this.argsStart === -1) {
          const lead = rest.length - rest.trimStart().length;
          if (lead === rest.length) return false;
          this.argsStart = this.pos + lead;
          this.argsSent = this.argsStart;
        }
        const end = jsonEnd(this.text, this.argsStart);
        const upTo = end === -1 ? this.text.length : end;
        if (upTo > this.argsSent) {
          out.push({ index: this.index, arguments: this.text.slice(this.argsSent, upTo) });
          this.argsSent = upTo;
        }
        if (end === -1) return false;
        this.pos = end;
        this.state = "after";
        return true;
      }
      case "after": {
        // The arguments' grammar allows white space after them.
        const r = rest.startsWith(syntax.suffix) ? rest : rest.trimStart();
        const skipped = rest.length - r.length;
        const next = syntax.between === null ? null : syntax.between + syntax.prefix;
        if (r.startsWith(syntax.suffix)) {
          const more = r.slice(syntax.suffix.length);
          if (next !== null && more.startsWith(next)) {
            this.pos += skipped + syntax.suffix.length + next.length;
            this.state = "name";
            return true;
          }
          if (next === null || !next.startsWith(more)) this.state = "stopped";
          return false;
        }
        if (!syntax.suffix.startsWith(r)) this.state = "stopped";
        return false;
      }
      case "stopped":
        return false;
    }
  }
}

/** The calls in what followed the trigger, whole (CallReader over the whole text). */
export function parseToolCalls(text: string, syntax: ToolSyntax, names: readonly string[]): ParsedCall[] {
  const calls: ParsedCall[] = [];
  for (const piece of new CallReader(syntax, names).push(text)) {
    if (piece.name !== undefined) calls.push({ name: piece.name, arguments: "" });
    else calls[piece.index]!.arguments += piece.arguments ?? "";
  }
  // A call whose arguments did not end is cut: left out.
  return calls.filter((c) => jsonEnd(c.arguments, 0) === c.arguments.length && c.arguments !== "");
}

/** Where the JSON value starting at `from` (after white space) ends, or -1 when it does not end in `text`. */
export function jsonEnd(text: string, from: number): number {
  let i = from;
  while (i < text.length && /\s/.test(text[i]!)) i++;
  let depth = 0;
  let inString = false;
  for (; i < text.length; i++) {
    const c = text[i]!;
    if (inString) {
      if (c === "\\") i++;
      else if (c === '"') {
        inString = false;
        if (depth === 0) return i + 1;
      }
    } else if (c === '"') inString = true;
    else if (c === "{" || c === "[") depth++;
    else if (c === "}" || c === "]") {
      depth--;
      if (depth === 0) return i + 1;
    } else if (depth === 0 && /[\s,]/.test(c)) return i; // a number, true, false or null ends here
  }
  return depth === 0 && !inString && i > from ? i : -1;
}
