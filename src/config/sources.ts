import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import type { ModelConfig } from "./schema.js";

/** A hub URI (`hf:user/repo/file.gguf`, `hf:user/repo:quant`) or a URL; anything else is a local path. */
export function isRemoteSource(source: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(source) || /^hf:/i.test(source);
}

/**
 * A local model source as a file: the path as given, else a model `lucena pull` fetched into the data directory,
 * named as `lucena models` lists it (with or without `.gguf`); null when none exists.
 */
export function localModelPath(source: string, dataDir: string): string | null {
  const candidates = [resolve(source), join(dataDir, "models", source), join(dataDir, "models", `${source}.gguf`)];
  return candidates.find((p) => existsSync(p)) ?? null;
}

/** The first model whose source is a local file that does not exist, with that file's full path; or null. */
export function missingModelFile(models: readonly ModelConfig[], dataDir: string): { id: string; path: string } | null {
  for (const m of models) {
    if (m.source === undefined || m.upstream || isRemoteSource(m.source)) continue;
    if (localModelPath(m.source, dataDir) === null) return { id: m.id, path: resolve(m.source) };
  }
  return null;
}
