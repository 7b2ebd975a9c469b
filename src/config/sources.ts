import { existsSync } from "node:fs";
import { resolve } from "node:path";
import type { ModelConfig } from "./schema.js";

/** A hub URI (`hf:user/repo/file.gguf`, `hf:user/repo:quant`) or a URL; anything else is a local path. */
export function isRemoteSource(source: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(source) || /^hf:/i.test(source);
}

/** The first model whose source is a local file that does not exist, with that file's full path; or null. */
export function missingModelFile(models: readonly ModelConfig[]): { id: string; path: string } | null {
  for (const m of models) {
    if (m.source === undefined || m.upstream || isRemoteSource(m.source)) continue;
    const path = resolve(m.source);
    if (!existsSync(path)) return { id: m.id, path };
  }
  return null;
}
