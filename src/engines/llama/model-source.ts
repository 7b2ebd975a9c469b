import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { createModelDownloader, resolveModelFile } from "node-llama-cpp";
import { makeModel } from "../../gguf/model-maker.js";
import type { Logger } from "../../observability/log.js";
import { isRemoteSource, localModelPath } from "../../config/sources.js";

export const DEMO_MODEL_FILE = "lucena-demo-tiny.gguf";

/**
 * Resolves a model source to a local GGUF file: the demo model (made on first use) when there is no source,
 * a local path as it is, or a remote source downloaded once into `<dataDir>/models` with a progress display.
 */
export async function resolveModelPath(
  source: string | undefined,
  dataDir: string,
  log: Logger,
  signal?: AbortSignal,
): Promise<string> {
  const models = join(dataDir, "models");
  if (source === undefined) {
    const path = join(models, DEMO_MODEL_FILE);
    if (!existsSync(path)) {
      const made = makeModel({ out: path, size: "tiny" });
      log.info({ path, bytes: made.bytes }, "made the demo model");
    }
    return path;
  }
  if (!isRemoteSource(source)) {
    const path = localModelPath(source, dataDir);
    if (path === null) throw new Error(`model file not found: ${resolve(source)}`);
    return path;
  }
  let lastTenth = -1;
  // On a terminal, node-llama-cpp's one progress bar redraws in place; elsewhere a log line every tenth.
  const terminal = Boolean(process.stderr.isTTY);
  return resolveModelFile(source, {
    directory: models,
    cli: terminal,
    signal,
    onProgress: ({ totalSize, downloadedSize }) => {
      if (terminal) return;
      const tenth = totalSize > 0 ? Math.floor((downloadedSize / totalSize) * 10) : 0;
      if (tenth !== lastTenth) {
        lastTenth = tenth;
        log.info({ source, downloadedSize, totalSize }, `downloading model: ${tenth * 10}%`);
      }
    },
  });
}

/**
 * Downloads a hub URI or URL into `dirPath` (`lucena pull`): one progress bar on a terminal, else `onTenth` every
 * tenth; a download stopped before (even by a killed process) goes on from the parts it has. The file's path.
 */
export async function pullModel(
  source: string,
  dirPath: string,
  onTenth: (percent: number, totalBytes: number) => void,
): Promise<string> {
  const terminal = Boolean(process.stderr.isTTY);
  let lastTenth = -1;
  const downloader = await createModelDownloader({
    modelUri: source,
    dirPath,
    showCliProgress: terminal,
    // A stopped download keeps what it has: the next pull of the same source goes on from there.
    deleteTempFileOnCancel: false,
    onProgress: ({ totalSize, downloadedSize }) => {
      if (terminal || totalSize <= 0) return;
      const tenth = Math.floor((downloadedSize / totalSize) * 10);
      if (tenth === lastTenth) return;
      lastTenth = tenth;
      onTenth(tenth * 10, totalSize);
    },
  });
  return downloader.download();
}
