import { LlamaGrammar, type Llama } from "node-llama-cpp";
import { llamaRuntime } from "../../src/engines/llama/runtime.js";
import { createLogger } from "../../src/observability/log.js";

/**
 * llama.cpp's own grammar parser and matcher (the one generation uses), to check a grammar's language: whether
 * it takes a text whole. node-llama-cpp keeps the matcher internal (`_testText`).
 */
export async function grammarMatcher(): Promise<(grammar: string, text: string) => boolean> {
  const llama: Llama = await llamaRuntime(createLogger("silent"));
  return (grammar, text) => {
    const matcher = new LlamaGrammar(llama, { grammar }) as unknown as { _testText(text: string): boolean };
    return matcher._testText(text);
  };
}
