import { spawn, spawnSync } from "node:child_process";
import {
  closeSync,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { supervise } from "./server.js";
import type { ChatMessageBody } from "./sse-client.js";
import { round, sleep } from "./stats.js";

/**
 * llama.cpp's own server and tools as the reference, built once from the llama.cpp source that node-llama-cpp
 * bundles (its gitRelease.bundle, so the same llama.cpp release as the engine) and cached outside the repository:
 * `${XDG_CACHE_HOME:-~/.cache}/lucena-one/llama.cpp/<tag>-<commit>/`.
 *
 * The binaries load node-llama-cpp's own prebuilt CPU backend, not the one the build makes, so both servers run
 * the same kernels: the built `libggml-base.so` and `libggml-cpu.so` are replaced by node-llama-cpp's
 * `libggml-base.so` and all its `libggml-cpu-<variant>.so` files (ggml loads the best variant for the CPU, as it
 * does in node-llama-cpp). `libggml-base.so.0` is a symlink to that one copy: two copies of it in a process abort
 * with `GGML_ASSERT(prev != ggml_uncaught_exception)`. A native build (`-march=native`) is avoided: on a CPU
 * with AMX it stops on an AMX instruction.
 */

const BINARIES = ["llama-server", "llama-bench", "llama-batched-bench"] as const;

/** The configure flags: CPU backends as loadable libraries, no native tuning (the prebuilt backend is used). */
export const CMAKE_FLAGS = [
  "-DGGML_BACKEND_DL=ON",
  "-DGGML_NATIVE=OFF",
  "-DBUILD_SHARED_LIBS=ON",
  "-DLLAMA_CURL=OFF",
  "-DCMAKE_BUILD_TYPE=Release",
];

export interface ReferenceBuild {
  /** node-llama-cpp's llama.cpp release tag and the bundle's commit. */
  tag: string;
  commit: string;
  /** The cache folder: `src/` (the clone and its `build/`), `bin/` (what runs), `build.log`. */
  dir: string;
  bin: string;
  /** Where the prebuilt CPU backend was copied from. */
  prebuilt: string;
}

export type ReferenceOutcome =
  { ok: true; build: ReferenceBuild; built_s: number | null } | { ok: false; reason: string };

type Say = (text: string) => void;

function cacheRoot(): string {
  const xdg = process.env.XDG_CACHE_HOME;
  return join(xdg && xdg.startsWith("/") ? xdg : join(homedir(), ".cache"), "lucena-one", "llama.cpp");
}

function has(command: string, args: string[] = ["--version"]): boolean {
  return spawnSync(command, args, { stdio: "ignore" }).status === 0;
}

/** Runs a command with its output appended to the log; resolves with its exit code. */
function run(
  command: string,
  args: string[],
  opts: { cwd: string; log: string; env?: NodeJS.ProcessEnv },
): Promise<number> {
  const fd = openSync(opts.log, "a");
  writeFileSync(fd, `\n$ ${command} ${args.join(" ")}\n`);
  const child = spawn(command, args, { cwd: opts.cwd, stdio: ["ignore", fd, fd], env: opts.env ?? process.env });
  closeSync(fd);
  return new Promise((resolve) => {
    child.once("error", () => resolve(-1));
    child.once("exit", (code) => resolve(code ?? -1));
  });
}

function logTail(path: string, lines = 15): string {
  try {
    return readFileSync(path, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "";
  }
}

/** What node-llama-cpp bundles: the release tag, the bundle, the bundle's commit, its prebuilt CPU backend. */
function bundled(
  repoRoot: string,
): { tag: string; bundle: string; commit: string; prebuilt: string } | { reason: string } {
  const llamaDir = join(repoRoot, "node_modules", "node-llama-cpp", "llama");
  const bundle = join(llamaDir, "gitRelease.bundle");
  if (!existsSync(bundle)) return { reason: `node-llama-cpp bundles no llama.cpp source here (${bundle} missing)` };
  const readJson = (name: string) => {
    try {
      return JSON.parse(readFileSync(join(llamaDir, name), "utf8")) as Record<string, string>;
    } catch {
      return {};
    }
  };
  const tag = readJson("llama.cpp.info.json").tag ?? readJson("binariesGithubRelease.json").release;
  if (!tag) return { reason: "node-llama-cpp's llama.cpp release tag is unknown (llama.cpp.info.json)" };
  if (!has("git")) return { reason: "git is not installed" };
  const head = spawnSync("git", ["ls-remote", bundle, "HEAD"], { encoding: "utf8" });
  const commit = /^([0-9a-f]{40})/.exec(head.stdout ?? "")?.[1];
  if (!commit) return { reason: `cannot read the commit of ${bundle}` };
  // node-llama-cpp's CPU-only binaries for this platform (the server here runs without a GPU).
  const platform = `${process.platform}-${process.arch}`;
  const bins = join(repoRoot, "node_modules", "@node-llama-cpp", platform, "bins", platform);
  if (!existsSync(join(bins, "libggml-base.so")))
    return { reason: `no prebuilt node-llama-cpp CPU backend at ${bins} (Linux only)` };
  return { tag, bundle, commit, prebuilt: realpathSync(bins) };
}

/** Copies a file or recreates a symlink as it is. */
function copyEntry(from: string, to: string): void {
  if (lstatSync(from).isSymbolicLink()) symlinkSync(readlinkSync(from), to);
  else copyFileSync(from, to);
}

/**
 * Puts the built binaries and libraries in `bin/`, with node-llama-cpp's prebuilt ggml base and CPU backends in
 * place of the built ones.
 */
function assemble(buildBin: string, prebuilt: string, bin: string): void {
  rmSync(bin, { recursive: true, force: true });
  mkdirSync(bin, { recursive: true });
  for (const name of BINARIES) copyFileSync(join(buildBin, name), join(bin, name));
  for (const name of readdirSync(buildBin)) {
    if (!/\.so(\.|$)/.test(name) || name.startsWith("libggml-base.") || name.startsWith("libggml-cpu")) continue;
    copyEntry(join(buildBin, name), join(bin, name));
  }
  copyFileSync(join(prebuilt, "libggml-base.so"), join(bin, "libggml-base.so"));
  symlinkSync("libggml-base.so", join(bin, "libggml-base.so.0"));
  for (const name of readdirSync(prebuilt)) {
    if (/^libggml-cpu-.+\.so$/.test(name)) copyFileSync(join(prebuilt, name), join(bin, name));
  }
}

export function referenceEnv(build: Pick<ReferenceBuild, "bin">): NodeJS.ProcessEnv {
  const prior = process.env.LD_LIBRARY_PATH;
  return { ...process.env, LD_LIBRARY_PATH: prior ? `${build.bin}:${prior}` : build.bin };
}

/**
 * The cached reference build, building it first when there is none (about 10 minutes on 2 cores, `-j` all
 * cores). Never throws: where the build is impossible (no cmake, no C++ compiler, no git, a failed step) the
 * outcome says why, and the harness leaves the llama.cpp column out.
 */
export async function ensureReference(opts: { repoRoot: string; say: Say; jobs: number }): Promise<ReferenceOutcome> {
  try {
    const src = bundled(opts.repoRoot);
    if ("reason" in src) return { ok: false, reason: src.reason };
    const dir = join(cacheRoot(), `${src.tag}-${src.commit.slice(0, 7)}`);
    const build: ReferenceBuild = {
      tag: src.tag,
      commit: src.commit,
      dir,
      bin: join(dir, "bin"),
      prebuilt: src.prebuilt,
    };
    if (existsSync(join(build.bin, "ready.json")) && BINARIES.every((b) => existsSync(join(build.bin, b)))) {
      return { ok: true, build, built_s: null };
    }
    const missing = [["cmake"], ["c++"], ["cc"]].filter(([c]) => !has(c)).map(([c]) => c);
    if (missing.length)
      return { ok: false, reason: `cannot build llama.cpp here: ${missing.join(", ")} not installed` };

    const began = performance.now();
    mkdirSync(dir, { recursive: true });
    const log = join(dir, "build.log");
    const checkout = join(dir, "src");
    const atCommit =
      existsSync(join(checkout, ".git")) &&
      spawnSync("git", ["rev-parse", "HEAD"], { cwd: checkout, encoding: "utf8" }).stdout?.trim() === src.commit;
    if (!atCommit) {
      rmSync(checkout, { recursive: true, force: true });
      opts.say(
        `cloning llama.cpp ${src.tag} (${src.commit.slice(0, 7)}) from node-llama-cpp's bundle into ${checkout}`,
      );
      if ((await run("git", ["clone", "--quiet", src.bundle, checkout], { cwd: dir, log })) !== 0) {
        return { ok: false, reason: `git clone of the bundle failed; log: ${log}\n${logTail(log)}` };
      }
    }
    opts.say(`building llama.cpp's ${BINARIES.join(", ")} (about 10 minutes on 2 cores the first time); log: ${log}`);
    if ((await run("cmake", ["-B", "build", ...CMAKE_FLAGS], { cwd: checkout, log })) !== 0) {
      return { ok: false, reason: `llama.cpp's cmake configure failed; log: ${log}\n${logTail(log)}` };
    }
    const targets = BINARIES.flatMap((b) => ["--target", b]);
    if ((await run("cmake", ["--build", "build", "-j", String(opts.jobs), ...targets], { cwd: checkout, log })) !== 0) {
      return { ok: false, reason: `llama.cpp's build failed; log: ${log}\n${logTail(log)}` };
    }
    assemble(join(checkout, "build", "bin"), src.prebuilt, build.bin);
    // The binaries must start with the prebuilt backend beside them (an ABI mismatch would abort here).
    const probe = spawnSync(join(build.bin, "llama-server"), ["--version"], {
      env: referenceEnv(build),
      encoding: "utf8",
    });
    if (probe.status !== 0) {
      return {
        ok: false,
        reason: `the built llama-server does not start with node-llama-cpp's backend: ${(probe.stderr ?? "").trim().slice(-800)}`,
      };
    }
    const built_s = round((performance.now() - began) / 1000, 1);
    writeFileSync(
      join(build.bin, "ready.json"),
      `${JSON.stringify(
        {
          tag: src.tag,
          commit: src.commit,
          cmake_flags: CMAKE_FLAGS,
          prebuilt: src.prebuilt,
          built: new Date().toISOString(),
          built_s,
          version: `${probe.stdout ?? ""}${probe.stderr ?? ""}`
            .trim()
            .split("\n")
            .filter((l) => /version|built with/.test(l)),
        },
        null,
        1,
      )}\n`,
    );
    opts.say(`llama.cpp reference ready in ${build.bin} (${built_s} s)`);
    return { ok: true, build, built_s };
  } catch (err) {
    return { ok: false, reason: `llama.cpp reference: ${err instanceof Error ? err.message : String(err)}` };
  }
}

/** The ggml CPU backend variant a process has loaded (from /proc/<pid>/maps), e.g. "haswell"; null if none seen. */
export function loadedCpuVariant(pid: number): string | null {
  try {
    const maps = readFileSync(`/proc/${pid}/maps`, "utf8");
    const lib = /\/(libggml-cpu[^/\s]*\.so)\s*$/m.exec(maps)?.[1];
    return lib ? lib.replace(/^libggml-cpu-?/, "").replace(/\.so$/, "") || "generic" : null;
  } catch {
    return null;
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

export interface LlamaServer {
  url: string;
  pid: number;
  args: string[];
  logFile: string;
  /** llama-server's `/apply-template` then `/tokenize` (special tokens added and parsed, as its chat route does). */
  promptTokens(messages: ChatMessageBody[]): Promise<number>;
  stop(): Promise<void>;
}

/**
 * Starts llama-server on a free loopback port, like the project's bench server: `parallel` sequences of
 * `contextPerSequence` tokens each (a KV cache per sequence, as the project's engine has), `threads` threads,
 * flash attention off (the project's default), the model read into memory (the project's `mmap: false`);
 * `--no-jinja`, so the GGUF's chat template is applied by llama.cpp's built-in template code (a random-weight
 * model's template needs no Jinja). Everything else is llama-server's default. Waits for /health.
 */
export async function startLlamaServer(
  build: ReferenceBuild,
  opts: { model: string; parallel: number; contextPerSequence: number; threads: number; readyTimeoutMs?: number },
): Promise<LlamaServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "lucena-bench-llama-server-"));
  const logFile = join(dir, "llama-server.log");
  const args = [
    "-m",
    opts.model,
    "--host",
    "127.0.0.1",
    "--port",
    String(port),
    "-np",
    String(opts.parallel),
    "-c",
    String(opts.parallel * opts.contextPerSequence),
    "-t",
    String(opts.threads),
    "-fa",
    "off",
    "-lm",
    "none",
    "-no-kvu",
    "--no-jinja",
    "--no-webui",
  ];
  const fd = openSync(logFile, "a");
  const proc = spawn(join(build.bin, "llama-server"), args, { env: referenceEnv(build), stdio: ["ignore", fd, fd] });
  closeSync(fd);
  const { alive, stop } = supervise(proc);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + (opts.readyTimeoutMs ?? 180_000);
  for (;;) {
    if (!alive()) throw new Error(`llama-server exited before it was ready; log: ${logFile}\n${logTail(logFile)}`);
    if (Date.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(`llama-server not ready in time; log: ${logFile}`);
    }
    try {
      if ((await fetch(`${url}/health`)).status === 200) break;
    } catch {
      /* not listening yet */
    }
    await sleep(200);
  }
  const post = async <T>(path: string, body: unknown): Promise<T> => {
    const res = await fetch(`${url}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`llama-server ${path}: ${res.status} ${text}`);
    return JSON.parse(text) as T;
  };
  return {
    url,
    pid: proc.pid!,
    args,
    logFile,
    promptTokens: async (messages) => {
      const { prompt } = await post<{ prompt: string }>("/apply-template", { messages });
      return (
        await post<{ tokens: unknown[] }>("/tokenize", { content: prompt, add_special: true, parse_special: true })
      ).tokens.length;
    },
    stop: async () => {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface LlamaBenchResult {
  /** tok/s (mean over repetitions) and its standard deviation, by test name: pp512, tg128, tg128@d512. */
  tests: Record<string, { tok_s: number; stddev: number }>;
  /** Each invocation's arguments (the model path left out). */
  runs: string[][];
  cpu_variant: string | null;
}

/**
 * llama-bench on the model: pp512 and tg128 on an empty context, then tg128 after 512 tokens (the depth of the
 * harness's 512-token single stream), `threads` threads, flash attention off (as served).
 */
export async function runLlamaBench(
  build: ReferenceBuild,
  opts: { model: string; threads: number; repetitions: number },
): Promise<LlamaBenchResult> {
  const common = ["-t", String(opts.threads), "-fa", "off", "-r", String(opts.repetitions), "-o", "json"];
  const runs = [
    ["-p", "512", "-n", "128", ...common],
    ["-p", "0", "-n", "128", "-d", "512", ...common],
  ];
  const out: LlamaBenchResult = { tests: {}, runs, cpu_variant: null };
  for (const args of runs) {
    const proc = spawn(join(build.bin, "llama-bench"), ["-m", opts.model, ...args], {
      env: referenceEnv(build),
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    proc.stdout.on("data", (b: Buffer) => {
      stdout += b.toString();
    });
    // The CPU backend is loaded before the model, which is logged: by the first lines, the variant is mapped.
    proc.stderr.on("data", (b: Buffer) => {
      stderr += b.toString();
      out.cpu_variant ??= loadedCpuVariant(proc.pid!);
    });
    const code = await new Promise<number>((resolve) => proc.once("exit", (c) => resolve(c ?? -1)));
    if (code !== 0)
      throw new Error(`llama-bench exited with ${code}: ${stderr.trim().split("\n").slice(-5).join("\n")}`);
    for (const r of JSON.parse(stdout) as {
      n_prompt: number;
      n_gen: number;
      n_depth?: number;
      avg_ts: number;
      stddev_ts: number;
    }[]) {
      const name = `${r.n_prompt > 0 ? `pp${r.n_prompt}` : `tg${r.n_gen}`}${r.n_depth ? `@d${r.n_depth}` : ""}`;
      out.tests[name] = { tok_s: round(r.avg_ts), stddev: round(r.stddev_ts) };
    }
  }
  return out;
}
