import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sleep } from "./stats.js";

export interface BenchServer {
  url: string;
  key: string;
  model: string;
  /** The "model loaded" log entry (contextSize, sequences, threads, ms); a gateway's "upstream model ready" (replicas, healthy). */
  loaded: Record<string, unknown>;
  logFile: string;
  /** The operations listener (health, metrics). */
  opsUrl: string;
  pid: number;
  /** Errors, and llama.cpp's warnings, from the server's log, for the report. */
  warnings(): string[];
  stop(): Promise<void>;
}

export interface StartServerOptions {
  cliPath: string;
  /** The model entry of the config file (merged over the defaults by the server). */
  model: Record<string, unknown> & { id: string };
  readyTimeoutMs?: number;
}

/**
 * Starts the real server process (`lucena serve`) on a free loopback port, with a temp data dir, a config file
 * and a key from LUCENA_API_KEYS, and waits for its "model loaded" line (a gateway, whose model has an `upstream`
 * block: "upstream model ready"). Its stdout (JSON logs, one line per request at the default level) goes to a
 * file, so the harness spends no CPU reading it.
 */
export async function startServer(opts: StartServerOptions): Promise<BenchServer> {
  const dataDir = mkdtempSync(join(tmpdir(), "lucena-bench-"));
  const key = `sk-lucena-bench${randomBytes(16).toString("hex")}`;
  const configFile = join(dataDir, "config.json");
  writeFileSync(configFile, JSON.stringify({ models: [opts.model] }, null, 2));
  const logFile = join(dataDir, "server.log");
  const fd = openSync(logFile, "a");
  const args = [
    opts.cliPath,
    "serve",
    "--port",
    "0",
    "--host",
    "127.0.0.1",
    "--data-dir",
    dataDir,
    "--config",
    configFile,
    "--ops-port",
    "0",
  ];
  const proc: ChildProcess = spawn(process.execPath, args, {
    env: { ...process.env, LUCENA_API_KEYS: key, LUCENA_LOG_LEVEL: "info" },
    stdio: ["ignore", fd, fd],
  });
  closeSync(fd);
  const { alive, stop } = supervise(proc);

  const entries = () =>
    readFileSync(logFile, "utf8")
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => {
        try {
          return JSON.parse(l) as Record<string, unknown>;
        } catch {
          return {};
        }
      });
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 120_000);
  let port = 0;
  let opsPort = 0;
  let loaded: Record<string, unknown> | undefined;
  while (!loaded) {
    if (!alive())
      throw new Error(`server exited before its model loaded; log: ${logFile}\n${readFileSync(logFile, "utf8")}`);
    if (Date.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(`server not ready in time; log: ${logFile}`);
    }
    for (const e of entries()) {
      if (e.msg === "listening") port = Number(e.port);
      if (e.msg === "ops listening") opsPort = Number(e.port);
      if (e.msg === "model loaded" || e.msg === "upstream model ready") loaded = e;
      if (e.msg === "model failed to load" || e.msg === "upstream model failed to start") {
        proc.kill("SIGKILL");
        throw new Error(`model failed to load: ${JSON.stringify(e)}`);
      }
    }
    if (!loaded) await sleep(50);
  }
  return {
    url: `http://127.0.0.1:${port}`,
    key,
    model: opts.model.id,
    loaded,
    logFile,
    opsUrl: `http://127.0.0.1:${opsPort}`,
    pid: proc.pid!,
    warnings: () =>
      entries()
        .filter((e) => Number(e.level) >= 50 || (Number(e.level) >= 40 && e.component === "llama.cpp"))
        .map((e) => String(e.msg)),
    stop: async () => {
      await stop();
      if (existsSync(dataDir)) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * A server process's end: `stop()` sends SIGTERM, then SIGKILL after 15 s, and waits for the exit. A harness that
 * exits before stopping it (an error, Ctrl-C) kills it on the way out, so no server is left behind.
 */
export function supervise(proc: ChildProcess): { alive: () => boolean; stop: () => Promise<void> } {
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  const alive = () => proc.exitCode === null && proc.signalCode === null;
  const orphan = () => {
    if (alive()) proc.kill("SIGKILL");
  };
  process.once("exit", orphan);
  void exited.then(() => process.off("exit", orphan));
  return {
    alive,
    stop: async () => {
      if (alive()) proc.kill("SIGTERM");
      const killer = setTimeout(() => {
        if (alive()) proc.kill("SIGKILL");
      }, 15_000);
      await exited;
      clearTimeout(killer);
    },
  };
}

/** Authenticated JSON request to the server; throws on a non-2xx status. */
export async function api<T>(server: Pick<BenchServer, "url" | "key">, path: string, body?: unknown): Promise<T> {
  const res = await fetch(`${server.url}${path}`, {
    method: body === undefined ? "GET" : "POST",
    headers: {
      authorization: `Bearer ${server.key}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${path}: ${res.status} ${text}`);
  return JSON.parse(text) as T;
}

export async function rssMb(server: Pick<BenchServer, "url" | "key">): Promise<number> {
  return (await api<{ rss_mb: number }>(server, "/v1/stats")).rss_mb;
}

/** Resident memory of a process split into anonymous and file-backed pages (Linux; null elsewhere), in MB. */
export function procMemory(pid: number): { rss_mb: number; anon_mb: number; file_mb: number } | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN);
    const mb = (n: number) => Math.round(n / 1024);
    return { rss_mb: mb(kb("VmRSS")), anon_mb: mb(kb("RssAnon")), file_mb: mb(kb("RssFile") + kb("RssShmem")) };
  } catch {
    return null;
  }
}
