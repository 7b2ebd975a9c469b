import { resolveChatWrapper, type LlamaModel } from "node-llama-cpp";
import type { ChatMessage } from "../../api/chat-request.js";
import type { Logger } from "../../observability/log.js";
import type { PromptCounter, Tools } from "../../prompt/build.js";
import { PromptTokenizer } from "./prompt-tokenizer.js";
import { llamaRuntime } from "./runtime.js";

/**
 * Counts prompts here with the model's own tokenizer and chat template, read from a GGUF file (a
 * vocabulary-only file is enough): no round trip to a replica.
 */
export class GgufCounter implements PromptCounter {
  readonly kind = "counter";
  private model?: LlamaModel;
  private tokenizer?: PromptTokenizer;

  constructor(private readonly path: string) {}

  async load(log: Logger): Promise<void> {
    const llama = await llamaRuntime(log);
    this.model = await llama.loadModel({ modelPath: this.path, vocabOnly: true });
    this.tokenizer = new PromptTokenizer(this.model, resolveChatWrapper(this.model));
  }

  async count(messages: readonly ChatMessage[], tools: Tools = null): Promise<number> {
    const tokens = await this.tokenizer!.encode(messages, Infinity, tools);
    return Array.isArray(tokens) ? tokens.length : tokens.atLeast;
  }

  async close(): Promise<void> {
    await this.model?.dispose();
  }
}
