import { getLlama, LlamaLogLevel, type Llama } from "node-llama-cpp";
import type { Logger } from "../../observability/log.js";
import { loadThreadPool } from "./thread-pool.js";

/**
 * llama.cpp, through node-llama-cpp: loaded only by what runs a GGUF file (the embedded engine, a GGUF prompt
 * counter). Everything else (a gateway of upstream models, the key CLI) never imports this module, so never
 * loads node-llama-cpp.
 */

let runtime: Promise<Llama> | undefined;

/** One llama.cpp runtime per process, shared by every embedded model; its log goes to ours. */
export function llamaRuntime(log: Logger): Promise<Llama> {
  if (!runtime) {
    const pool = loadThreadPool(); // before getLlama: it must be in place when the CPU backend loads
    if (pool.loaded) log.debug({ component: "engine" }, "engine threads persist across decode steps");
    else
      log.warn(
        { component: "engine", reason: pool.reason },
        "engine threads are started anew at every decode step; with more than one thread, decoding is much slower",
      );
  }
  runtime ??= getLlama({
    gpu: "auto",
    logLevel: LlamaLogLevel.warn,
    logger: (level, message) => {
      const text = message.trim();
      if (!text) return;
      if (level === LlamaLogLevel.error || level === LlamaLogLevel.fatal) log.error({ component: "llama.cpp" }, text);
      else if (level === LlamaLogLevel.warn) log.warn({ component: "llama.cpp" }, text);
      else log.debug({ component: "llama.cpp" }, text);
    },
  });
  return runtime;
}
