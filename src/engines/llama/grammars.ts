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
    const text = formatGrammar(format);
    let grammar = this.kept.get(text);
    if (grammar) {
      this.kept.delete(text); // most recently used last
    } else {
      try {
        grammar = new LlamaGrammar(this.llama, { grammar: text });
      } catch {
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
