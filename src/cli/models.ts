import { existsSync, readdirSync, statSync } from "node:fs";
import { basename, join } from "node:path";
import { Command } from "commander";
import { loadConfig } from "../config/load.js";
import { isRemoteSource } from "../config/sources.js";

interface Common {
  dataDir?: string;
  config?: string;
  json?: boolean;
}

const modelsDir = (o: Common) => join(loadConfig({ dataDir: o.dataDir, config: o.config }).data_dir, "models");

/** `lucena pull <hf:… | URL>`: a model downloaded into the data directory, resumed where a download stopped. */
export function pullCommand(): Command {
  return new Command("pull")
    .description("download a model (hf:user/repo/file.gguf or a URL) into the data directory; resumes a stopped one")
    .argument("<source>", "a hub URI (hf:user/repo/file.gguf, hf:user/repo:quant) or a URL of a GGUF file")
    .option("--data-dir <dir>", "data directory (default ./data, or LUCENA_DATA_DIR)")
    .option("--config <file>", "read data_dir from this config file")
    .action(async (source: string, o: Common) => {
      if (!isRemoteSource(source)) {
        process.stderr.write(`lucena pull: ${source} is not a hub URI (hf:…) or a URL\n`);
        process.exitCode = 2;
        return;
      }
      // Loaded here only: other commands (and a gateway's serve) never load node-llama-cpp.
      const { pullModel } = await import("../engines/llama/model-source.js");
      const path = await pullModel(source, modelsDir(o), (percent, total) =>
        process.stderr.write(`lucena pull: ${percent}% of ${(total / 2 ** 20).toFixed(1)} MiB\n`),
      );
      process.stdout.write(`${path}\nServe it with: lucena serve --model ${basename(path)}\n`);
    });
}

/** `lucena models`: the GGUF files in the data directory, with their sizes. */
export function modelsCommand(): Command {
  return new Command("models")
    .description("list the models in the data directory (what pull fetched, and the demo model)")
    .option("--data-dir <dir>", "data directory (default ./data, or LUCENA_DATA_DIR)")
    .option("--config <file>", "read data_dir from this config file")
    .option("--json", "print JSON")
    .action((o: Common) => {
      const dir = modelsDir(o);
      const files = existsSync(dir)
        ? readdirSync(dir)
            .filter((f) => f.endsWith(".gguf"))
            .map((name) => ({ name, bytes: statSync(join(dir, name)).size, path: join(dir, name) }))
        : [];
      if (o.json) {
        process.stdout.write(`${JSON.stringify(files)}\n`);
        return;
      }
      if (files.length === 0) process.stdout.write(`no models in ${dir}\n`);
      for (const f of files) process.stdout.write(`${f.name}  ${(f.bytes / 2 ** 20).toFixed(1)} MiB\n`);
    });
}
