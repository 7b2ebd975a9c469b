import { Command } from "commander";
import { loadConfig } from "../config/load.js";
import { createKey, KeyRequestError, keyJson, usageJson } from "../keys/admin-ops.js";
import { KeyStore } from "../keys/store.js";

interface Common {
  dataDir?: string;
  config?: string;
  json?: boolean;
}

function openStore(o: Common): KeyStore {
  return new KeyStore(loadConfig({ dataDir: o.dataDir, config: o.config }).data_dir);
}

function withStore<T extends Common>(fn: (store: KeyStore, o: T, ...args: string[]) => void) {
  return (...args: unknown[]) => {
    const cmd = args.at(-1) as Command;
    const o = cmd.optsWithGlobals<T>();
    const store = openStore(o);
    try {
      fn(store, o, ...(args.slice(0, -2) as string[]));
    } catch (err) {
      if (err instanceof KeyRequestError) {
        process.stderr.write(`lucena keys: ${err.message}\n`);
        process.exitCode = 2;
        return;
      }
      throw err;
    } finally {
      store.close();
    }
  };
}

/**
 * The models a key is restricted to, against the configured ones: with --config, an unknown id is refused (the
 * key would get 404 for it); without, the default configuration's models are all that is known, so a warning.
 */
function checkModels(o: Common & { models?: string }): void {
  if (!o.models) return;
  const known = loadConfig({ dataDir: o.dataDir, config: o.config }).models.map((m) => m.id);
  const unknown = o.models
    .split(",")
    .map((m) => m.trim())
    .filter((m) => m && !known.includes(m));
  if (unknown.length === 0) return;
  const list = `${unknown.map((m) => `"${m}"`).join(", ")} ${unknown.length === 1 ? "is" : "are"} not among the models`;
  if (o.config) throw new KeyRequestError(`--models: ${list} of ${o.config} (${known.join(", ")})`, "models");
  process.stderr.write(
    `lucena keys: warning: ${list} of the default configuration (${known.join(", ")}); ` +
      "pass --config with the server's file to check against its models\n",
  );
}

const when = (t: number | null) => (t === null ? "-" : new Date(t * 1000).toISOString().replace(".000Z", "Z"));

/** `lucena keys …`: issue, list, revoke keys and read the usage ledger, in the data directory's store. */
export function keysCommand(): Command {
  const keys = new Command("keys")
    .description("manage API keys and read usage (in the data directory's key store)")
    .option("--data-dir <dir>", "data directory (default ./data, or LUCENA_DATA_DIR)")
    .option("--config <file>", "read data_dir from this config file")
    .option("--json", "print JSON");

  keys
    .command("create")
    .description("create a key; it is printed once and only its hash is stored")
    .requiredOption("--name <name>", "a name for the key's owner or use")
    .option("--rpm <n>", "requests per minute")
    .option("--tpm <n>", "tokens per minute (prompt + completion)")
    .option("--concurrency <n>", "requests at once")
    .option("--expires <duration>", "lifetime with its unit, e.g. 30d, 12h, 90m")
    .option("--models <ids>", "comma-separated model ids this key may use (default: all)")
    .action(
      withStore<
        Common & { name: string; rpm?: string; tpm?: string; concurrency?: string; expires?: string; models?: string }
      >((store, o) => {
        checkModels(o);
        const same = store.list().filter((k) => k.name === o.name.trim() && k.revokedAt === null);
        if (same.length > 0) {
          process.stderr.write(
            `lucena keys: warning: ${same.length === 1 ? "a key" : `${same.length} keys`} named "${o.name.trim()}" ` +
              `already exist${same.length === 1 ? "s" : ""} (${same.map((k) => k.id).join(", ")}); this one is another\n`,
          );
        }
        const made = createKey(store, o);
        if (o.json) {
          process.stdout.write(`${JSON.stringify(made)}\n`);
          return;
        }
        process.stdout.write(
          `Created ${made.id} (${made.name}). The key is shown this once:\n\n  ${made.key}\n\n` +
            `Limits: rpm ${made.rpm ?? "-"}, tpm ${made.tpm ?? "-"}, concurrency ${made.concurrency ?? "-"}; ` +
            `expires ${when(made.expires_at)}; models ${made.models?.join(",") ?? "all"}\n`,
        );
      }),
    );

  keys
    .command("list")
    .description("list keys (prefixes only, never the keys)")
    .action(
      withStore((store, o) => {
        const list = store.list().map(keyJson);
        if (o.json) {
          process.stdout.write(`${JSON.stringify(list)}\n`);
          return;
        }
        const now = Date.now() / 1000;
        for (const k of list) {
          const state =
            k.revoked_at !== null ? "revoked" : k.expires_at !== null && k.expires_at <= now ? "expired" : "active";
          process.stdout.write(
            `${k.id}  ${k.prefix}…  ${state.padEnd(7)}  ${k.name}  rpm=${k.rpm ?? "-"} tpm=${k.tpm ?? "-"} ` +
              `concurrency=${k.concurrency ?? "-"} expires=${when(k.expires_at)} models=${k.models?.join(",") ?? "all"}\n`,
          );
        }
        if (list.length === 0) process.stdout.write("no keys\n");
      }),
    );

  keys
    .command("revoke")
    .description("revoke a key: it stops working within a second, in every server sharing this data directory")
    .argument("<id>", "the key's id (from keys list)")
    .action(
      withStore((store, o, id) => {
        const key = store.get(id);
        if (!key) {
          process.stderr.write(`lucena keys: no key with id ${id}\n`);
          process.exitCode = 1;
          return;
        }
        store.revoke(id);
        const out = keyJson(store.get(id)!);
        process.stdout.write(o.json ? `${JSON.stringify(out)}\n` : `revoked ${id} (${out.name})\n`);
      }),
    );

  keys
    .command("usage")
    .description("sum the usage ledger, per key or for one key")
    .argument("[id]", "one key's id")
    .action(
      withStore((store, o, id) => {
        const rows = store.usage(id).map(usageJson);
        if (o.json) {
          process.stdout.write(`${JSON.stringify(id === undefined ? rows : rows[0])}\n`);
          return;
        }
        for (const r of rows) {
          process.stdout.write(
            `${r.key_id ?? "(none)"}  requests=${r.requests} prompt_tokens=${r.prompt_tokens} ` +
              `completion_tokens=${r.completion_tokens} total_tokens=${r.total_tokens} in_progress=${r.in_progress}\n`,
          );
        }
        if (rows.length === 0) process.stdout.write("no usage\n");
      }),
    );
  return keys;
}
