import { LlamaGrammar, type Llama } from "node-llama-cpp";
import { errors } from "../../core/errors.js";
import type { OutputFormat } from "../engine.js";
import { formatGrammar } from "../../structured/format-grammar.js";

/** Compiled grammars kept, by their text: clients send the same schema request after request. */
const KEPT = 64;

/**
 * The answers' grammars, compiled by llama.cpp's grammar parser. Compiling is synchronous (the constructor
 * `llama.createGrammar` wraps), so a grammar that cannot be parsed is refused before the request is admitted.
 */
export class Grammars {
  private readonly kept = new Map<string, LlamaGrammar>();

  constructor(private readonly llama: Llama) {}

  /** The grammar for `format`: a 400 naming the request field when it cannot be built or parsed. */
  for(format: OutputFormat): LlamaGrammar {
    return this.compile(formatGrammar(format), format);
  }

  /** The grammar of a request's tool calls (tool-calls.ts), made here: a 400 naming `tools` when llama.cpp refuses it. */
  forTools(text: string): LlamaGrammar {
    return this.compile(text, null);
  }

  private compile(text: string, format: OutputFormat | null): LlamaGrammar {
    let grammar = this.kept.get(text);
    if (grammar) {
      this.kept.delete(text); // most recently used last
    } else {
      try {
        grammar = new LlamaGrammar(this.llama, { grammar: text });
      } catch {
        if (format === null) {
          throw errors.invalidRequest(
            "tools: the grammar for these tools' parameters is too large for llama.cpp; lower their counts.",
            "tools",
          );
        }
        if (format.kind === "grammar") {
          throw errors.invalidRequest("grammar: llama.cpp cannot parse this GBNF grammar.", "grammar");
        }
        // What llama.cpp refuses in a grammar made here: repetitions too large to expand (minItems, maxItems,
        // maxLength in the thousands).
        const field = format.kind === "json_schema" ? format.field : "response_format";
        throw errors.invalidRequest(
          `${field}: the grammar for this schema is too large for llama.cpp; lower its counts (minItems, maxItems, maxLength).`,
          field,
        );
      }
      if (this.kept.size >= KEPT) this.kept.delete(this.kept.keys().next().value!);
    }
    this.kept.set(text, grammar);
    return grammar;
  }
}
