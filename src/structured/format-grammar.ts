import { errors } from "../core/errors.js";
import type { OutputFormat } from "../engines/engine.js";
import { jsonObjectGrammar, jsonSchemaGrammar, SchemaRefusal } from "./json-grammar.js";

/** The GBNF grammar that holds an answer to `format`; a 400 naming the request field when a schema cannot be followed. */
export function formatGrammar(format: OutputFormat): string {
  switch (format.kind) {
    case "json_object":
      return jsonObjectGrammar();
    case "grammar":
      return format.gbnf;
    case "json_schema":
      try {
        return jsonSchemaGrammar(format.schema);
      } catch (err) {
        if (!(err instanceof SchemaRefusal)) throw err;
        const field = format.field === "response_format" ? "response_format.json_schema.schema" : "json_schema";
        throw errors.invalidRequest(`${field}: ${err.message}`, format.field);
      }
  }
}
