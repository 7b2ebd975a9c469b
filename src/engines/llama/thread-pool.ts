import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { constants, platform } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * Persistent engine threads (native/ggml-pool, built by `npm install`).
 *
 * node-llama-cpp's prebuilt llama.cpp has no OpenMP and attaches no ggml thread pool, so each decode step starts
 * its worker threads anew; on a small machine every step then waits for the scheduler (2 cores: the tiny model
 * decodes at 70 tok/s with 2 threads against 2,700 with 1). The native module gives llama.cpp's CPU backend a
 * thread pool that outlives each step (see ggml_pool.c). It must be loaded with RTLD_GLOBAL before node-llama-cpp
 * loads its CPU backend, which is why the engine calls `loadThreadPool()` before `getLlama()`.
 *
 * The same module makes the KV cache resident as it fills rather than at load (llama.cpp zeroes the whole buffer
 * with a memset; the module drops its pages instead, which reads back as zeros), and gives `releaseFreedMemory()`.
 * With 8 sequences of 3,072 tokens on the bench model, RSS after load goes from 1,760 MB to about 630 MB.
 *
 * It depends on the layout of two ggml structs, checked against the llama.cpp that node-llama-cpp 3.22.1 bundles
 * (CHECKED_AGAINST): with any other node-llama-cpp or llama.cpp it is never loaded, and the engine says why in one
 * log line, so that an upgrade cannot corrupt memory; ggml_pool.c also checks the layout of the pool parameters
 * on its first call. `LUCENA_THREAD_POOL=off` turns it off.
 */

export interface ThreadPoolStats {
  /** Computations handed a persistent pool. */
  pooledComputes: number;
  /** Computations passed straight through (one thread, or the module disabled itself). */
  passthroughComputes: number;
  /** Pools made: one per computation running at once, per thread count. */
  poolsCreated: number;
  /** Pools idle now, their threads parked until the next computation (0 after `releaseThreadPools()`). */
  poolsKept: number;
  /** ggml's polling level for idle pool threads (0: they sleep at once). */
  poll: number;
  /** Large buffers zeroed by dropping their pages (the KV cache), and how many bytes that left unbacked. */
  lazyClears: number;
  lazyClearedBytes: number;
  /** False when the module turned itself off (`reason` says why). */
  active: boolean;
  reason?: string;
}

interface Native {
  stats(): ThreadPoolStats;
  setPoll(level: number): void;
  trim(): boolean;
  release(): number;
  checkLazyZero(bytes: number): LazyZeroCheck;
}

/** What native/ggml-pool's page-dropping zeroing did to a dirty buffer (a self-check for the tests). */
export interface LazyZeroCheck {
  /** The pages were dropped (not written). */
  lazy: boolean;
  /** Every byte of the range reads 0 afterwards. */
  zero: boolean;
  /** The bytes just outside the range kept their value. */
  edgesKept: boolean;
}

export type ThreadPoolState =
  | {
      loaded: true;
      stats: () => ThreadPoolStats;
      trim: () => boolean;
      release: () => number;
      checkLazyZero: (bytes: number) => LazyZeroCheck;
    }
  | { loaded: false; reason: string };

/**
 * What the struct layouts in ggml_pool.c were checked against: node-llama-cpp's version and the llama.cpp release
 * it bundles and builds its binaries from (its llama/llama.cpp.info.json). Anything else runs without the module.
 */
export const CHECKED_AGAINST = { nodeLlamaCpp: ["3.22.1"], llamaCpp: ["v0.5.0"] } as const;

/** The node-llama-cpp and llama.cpp this process would load. */
export interface FoundVersions {
  nodeLlamaCpp: string;
  llamaCpp: string | null;
}

/** Why the module must stay off with these versions, or null when they are the ones it was written for. */
export function incompatibility(found: FoundVersions): string | null {
  if (!(CHECKED_AGAINST.nodeLlamaCpp as readonly string[]).includes(found.nodeLlamaCpp)) {
    return `node-llama-cpp ${found.nodeLlamaCpp} is not one native/ggml-pool was checked against (${CHECKED_AGAINST.nodeLlamaCpp.join(", ")})`;
  }
  if (found.llamaCpp === null || !(CHECKED_AGAINST.llamaCpp as readonly string[]).includes(found.llamaCpp)) {
    return `llama.cpp ${found.llamaCpp ?? "(release unknown)"} is not one native/ggml-pool was checked against (${CHECKED_AGAINST.llamaCpp.join(", ")})`;
  }
  return null;
}

/**
 * Idle pool threads sleep at once (ggml's poll level 0): between decode steps the cores go to Node's event loop
 * instead of a spinning thread. Measured on the bench model, in a raw decode loop: 65.7 tok/s at poll 0 against
 * 65.0 at ggml's default 50.
 */
const POLL_LEVEL = 0;

let state: ThreadPoolState | undefined;

function addonPath(): string | undefined {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, "native", "ggml-pool", "build", "Release", "ggml_pool.node");
    if (existsSync(candidate)) return candidate;
    if (existsSync(join(dir, "package.json"))) return undefined; // the project root: not built
    dir = dirname(dir);
  }
  return undefined;
}

function foundVersions(): FoundVersions {
  const require = createRequire(import.meta.url);
  const root = join(dirname(require.resolve("node-llama-cpp")), ".."); // <pkg>/dist/index.js → <pkg>
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string };
  let llamaCpp: string | null = null;
  try {
    llamaCpp =
      (JSON.parse(readFileSync(join(root, "llama", "llama.cpp.info.json"), "utf8")) as { tag?: string }).tag ?? null;
  } catch {
    // unknown: treated as unchecked
  }
  return { nodeLlamaCpp: pkg.version, llamaCpp };
}

/** Loads the module once per process; call before node-llama-cpp's getLlama(). */
export function loadThreadPool(): ThreadPoolState {
  if (state) return state;
  state = load();
  return state;
}

function load(): ThreadPoolState {
  if (process.env.LUCENA_THREAD_POOL === "off") return { loaded: false, reason: "LUCENA_THREAD_POOL=off" };
  if (platform() !== "linux") return { loaded: false, reason: `not built for ${platform()} (Linux only)` };
  const why = incompatibility(foundVersions());
  if (why) return { loaded: false, reason: why };
  const path = addonPath();
  if (!path) return { loaded: false, reason: "native/ggml-pool is not built (run npm install)" };
  const mod = { exports: {} as Native };
  try {
    process.dlopen(mod, path, constants.dlopen.RTLD_NOW | constants.dlopen.RTLD_GLOBAL);
  } catch (err) {
    return { loaded: false, reason: `native/ggml-pool did not load: ${(err as Error).message}` };
  }
  mod.exports.setPoll(POLL_LEVEL);
  const native = mod.exports;
  return {
    loaded: true,
    stats: () => native.stats(),
    trim: () => native.trim(),
    release: () => native.release(),
    checkLazyZero: (bytes) => native.checkLazyZero(bytes),
  };
}

/** Whether engine threads persist across decode steps (the module loaded and has not turned itself off). */
export function threadsPersist(): boolean {
  return state?.loaded === true && state.stats().active;
}

/**
 * Returns the C heap's free memory to the system (glibc's malloc_trim). Loading a model frees large temporary
 * buffers (tensor data read for repacking, graph reservations) that glibc's arenas would otherwise keep resident.
 * Without the native module this does nothing.
 */
export function releaseFreedMemory(): boolean {
  return state?.loaded === true ? state.trim() : false;
}

/**
 * Ends the kept engine threads (joins them) and keeps none from now on; later decode steps start their threads
 * anew. Called at shutdown once every engine is closed, so that no engine thread is left inside llama.cpp's CPU
 * backend while the process exit runs that library's static destructors. Returns how many pools were ended.
 */
export function releaseThreadPools(): number {
  return state?.loaded === true ? state.release() : 0;
}
