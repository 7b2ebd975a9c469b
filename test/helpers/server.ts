import { spawn, type ChildProcess } from "node:child_process";
import Database from "better-sqlite3";
import { createWriteStream, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { cliPath, testLogDir } from "./paths.js";

export const TEST_KEY = "sk-lucena-test0000000000000000000000000000";

export interface RunningServer {
  url: string;
  port: number;
  key: string;
  /** The operations listener (health, metrics), from its "ops listening" log line; null when it is off. */
  opsUrl: string | null;
  proc: ChildProcess;
  /** Every line the process wrote to stdout (JSON logs) and stderr. */
  logs: string[];
  dataDir: string;
  /** Sends SIGTERM and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export interface StartOptions {
  /** GGUF path for the default model (`--model`). */
  model?: string;
  /** A config object, written to a file and passed with `--config`. */
  config?: Record<string, unknown>;
  env?: Record<string, string>;
  args?: string[];
  /** Wait until the model is loaded (default true). */
  waitReady?: boolean;
  /** Share this data directory (key store, ledger) instead of a fresh one. */
  dataDir?: string;
  /** Leave LUCENA_API_KEYS unset, so only the key store's keys work. */
  noConfigKey?: boolean;
}

/** Starts the real server process (`lucena serve`) on a free loopback port. */
export async function startServer(opts: StartOptions = {}): Promise<RunningServer> {
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), "lucena-test-"));
  const args = [cliPath, "serve", "--port", "0", "--host", "127.0.0.1", "--data-dir", dataDir];
  if (opts.model) args.push("--model", opts.model);
  if (opts.config) {
    const file = join(dataDir, "config.json");
    writeFileSync(file, JSON.stringify(opts.config));
    args.push("--config", file);
  }
  // The operations listener on a free port (several servers may run at once); a caller's --ops-port wins.
  args.push("--ops-port", "0");
  args.push(...(opts.args ?? []));
  const proc = spawn(process.execPath, args, {
    env: { ...process.env, LUCENA_API_KEYS: opts.noConfigKey ? "" : TEST_KEY, LUCENA_LOG_LEVEL: "info", ...opts.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: string[] = [];
  mkdirSync(testLogDir, { recursive: true });
  const logFile = createWriteStream(join(testLogDir, `server-${proc.pid}.log`));
  const keep = (line: string) => {
    logs.push(line);
    logFile.write(`${line}\n`);
  };
  proc.once("exit", () => logFile.end());
  let opsUrl: string | null = null;
  const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)));

  const ready = new Promise<number>((resolve, reject) => {
    let port = 0;
    let polling = false;
    const want = opts.waitReady ?? true;
    /**
     * Ready is what the server's own readiness check says: `/health` on the operations listener, once no model is
     * loading any more (every one ready, or an upstream model whose replicas are down, which some tests start on
     * purpose). A server without an operations listener is ready at its models' log lines.
     */
    const pollHealth = async () => {
      if (polling) return;
      polling = true;
      for (;;) {
        if (proc.exitCode !== null || proc.signalCode !== null) return;
        try {
          const h = (await fetch(`${opsUrl}/health`).then((r) => r.json())) as { models: Record<string, string> };
          const states = Object.values(h.models);
          if (states.includes("failed")) return reject(new Error(`model failed to load:\n${logs.join("\n")}`));
          if (!states.includes("loading")) return resolve(port);
        } catch {
          /* not answering yet */
        }
        await new Promise((r) => setTimeout(r, 25));
      }
    };
    const onLine = (line: string) => {
      keep(line);
      if (!line.startsWith("{")) return;
      try {
        const entry = JSON.parse(line) as { msg?: string; port?: number };
        if (entry.msg === "ops listening") opsUrl = `http://127.0.0.1:${entry.port}`;
        if (entry.msg === "listening") {
          port = entry.port!;
          if (!want) resolve(port);
        }
        if (want && port !== 0 && opsUrl !== null) void pollHealth();
        const modelUp = entry.msg === "model loaded" || entry.msg === "upstream model ready";
        if (want && modelUp && opsUrl === null) resolve(port);
        if (entry.msg === "model failed to load") reject(new Error(`model failed to load: ${line}`));
      } catch {
        /* not a log line */
      }
    };
    createInterface({ input: proc.stdout }).on("line", onLine);
    createInterface({ input: proc.stderr }).on("line", keep);
    void exited.then((code) =>
      reject(new Error(`server exited with ${code} before it was ready:\n${logs.join("\n")}`)),
    );
  });
  const timeout = new Promise<never>((_, reject) =>
    setTimeout(() => reject(new Error(`server not ready in 60 s:\n${logs.join("\n")}`)), 60_000).unref(),
  );
  const port = await Promise.race([ready, timeout]);
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    key: TEST_KEY,
    opsUrl,
    proc,
    logs,
    dataDir,
    stop: async (signal = "SIGTERM") => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
}

/** A request's row in a server's usage ledger (its SQLite file, read-only), or undefined. */
export function ledgerRow(
  s: RunningServer,
  requestId: string | null | undefined,
): { prompt_tokens: number; completion_tokens: number; model: string } | undefined {
  if (!requestId) throw new Error("the client saw no request id");
  const db = new Database(join(s.dataDir, "lucena.db"), { readonly: true });
  try {
    return db
      .prepare("SELECT prompt_tokens, completion_tokens, model FROM usage WHERE request_id = ?")
      .get(requestId) as { prompt_tokens: number; completion_tokens: number; model: string } | undefined;
  } finally {
    db.close();
  }
}
