import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestContext } from "node:test";
import { DEFAULT_MODEL } from "../../src/config/defaults.js";
import type { ChatMessage } from "../../src/api/chat-request.js";
import type { ModelConfig } from "../../src/config/schema.js";
import { sampling, type GenerateOptions } from "../../src/engines/engine.js";
import { LlamaEngine } from "../../src/engines/llama/llama-engine.js";
import { createLogger } from "../../src/observability/log.js";
import { testModel } from "./models.js";

/** The real embedded engine on the tiny made model (unless `config` says otherwise), loaded, closed after `t`. */
export async function embeddedEngine(t: TestContext, config: Partial<ModelConfig>): Promise<LlamaEngine> {
  const dataDir = mkdtempSync(join(tmpdir(), "lucena-engine-test-"));
  const e = new LlamaEngine({ ...DEFAULT_MODEL, source: testModel(), ...config }, dataDir, createLogger("silent"));
  t.after(async () => {
    await e.close();
    rmSync(dataDir, { recursive: true, force: true });
  });
  await e.load();
  return e;
}

/** The whole prompt's tokens for these messages (no limit: never cut short). */
export async function encodeAll(e: LlamaEngine, messages: readonly ChatMessage[]): Promise<number[]> {
  const tokens = await e.encoder.encode(messages);
  if (!Array.isArray(tokens)) throw new Error("an encoding without a limit stopped early");
  return tokens;
}

/** Options for a greedy generation of one user message, as the chat route would build them. */
export async function greedyOptions(e: LlamaEngine, content: string, maxTokens: number): Promise<GenerateOptions> {
  const messages = [{ role: "user" as const, content }];
  const prompt = await encodeAll(e, messages);
  return {
    ...sampling({ maxTokens, temperature: 0, topP: 1, topK: 0, seed: 1 }),
    input: { kind: "tokens", tokens: prompt },
    signal: new AbortController().signal,
  };
}
