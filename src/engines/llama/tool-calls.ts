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
  const { call, parallelism } = wrapper.settings.functions;
  const sectionPrefix = textOf(parallelism?.call.sectionPrefix);
  const prefix = textOf(call.prefix);
  return {
    trigger: (sectionPrefix + prefix).trimStart(),
    prefix,
    paramsPrefix: textOf(call.paramsPrefix),
    suffix: textOf(call.suffix),
    between: parallelism ? textOf(parallelism.call.betweenCalls) : null,
    sectionSuffix: textOf(parallelism?.call.sectionSuffix),
  };
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

/**
 * The calls in what followed the trigger. The grammar has held the model to the syntax, so this reads it
 * without guessing: the longest tool name that is followed by paramsPrefix, the arguments to the end of their
 * JSON value, the suffix, then the next call.
 */
export function parseToolCalls(text: string, syntax: ToolSyntax, names: readonly string[]): ParsedCall[] {
  const calls: ParsedCall[] = [];
  const byLength = [...names].sort((a, b) => b.length - a.length);
  let at = 0;
  for (;;) {
    const name = byLength.find((n) => text.startsWith(n + syntax.paramsPrefix, at));
    if (name === undefined) break;
    at += name.length + syntax.paramsPrefix.length;
    const end = jsonEnd(text, at);
    if (end === -1) break;
    calls.push({ name, arguments: text.slice(at, end).trim() });
    at = end;
    // The arguments' grammar allows white space after them.
    if (!text.startsWith(syntax.suffix, at)) while (at < text.length && /\s/.test(text[at]!)) at++;
    if (!text.startsWith(syntax.suffix, at)) break;
    at += syntax.suffix.length;
    const next = syntax.between === null ? null : syntax.between + syntax.prefix;
    if (next === null || !text.startsWith(next, at)) break;
    at += next.length;
  }
  return calls;
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
