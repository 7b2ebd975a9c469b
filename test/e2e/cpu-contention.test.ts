import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { availableParallelism, platform } from "node:os";
import { after, before, describe, test } from "node:test";
import { procStatReader } from "../../src/engines/llama/cpu-share.js";
import { engineThreads } from "../../src/engines/llama/llama-engine.js";
import { llamaRuntime } from "../../src/engines/llama/runtime.js";
import { loadThreadPool } from "../../src/engines/llama/thread-pool.js";
import { createLogger } from "../../src/observability/log.js";
import { embeddedEngine, greedyOptions } from "../helpers/engine.js";
import { testModel } from "../helpers/models.js";
import { startServer, type RunningServer } from "../helpers/server.js";
import { until } from "../helpers/until.js";

const MODEL = "lucena-coder-latest";
const onLinux = platform() === "linux";

/** The cores the whole machine keeps busy over `ms`, whoever uses them, read as the engine's monitor reads them. */
async function busyCores(ms = 1500): Promise<number> {
  const read = procStatReader(undefined);
  const a = read();
  await new Promise((r) => setTimeout(r, ms));
  const b = read();
  if (!a || !b) return 0; // no /proc/stat: nothing tells the machine is busy
  return ((b.busy - a.busy) / Math.max(1, b.total - a.total)) * b.cores;
}

/** A process that keeps one core busy until killed. */
function hog(): ChildProcess {
  return spawn(process.execPath, ["-e", "for(;;){}"], { stdio: "ignore" });
}

async function kill(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise((r) => p.once("exit", r));
  p.kill("SIGKILL");
  await exited;
}

describe(
  "a lowered thread limit takes effect at the next decode step (what the contention monitor relies on)",
  { skip: onLinux ? false : "native/ggml-pool is built for Linux only" },
  () => {
    test("node-llama-cpp's llama.maxThreads, lowered to 1, makes the next steps run on one thread; raised, on two again", async (t) => {
      const pool = loadThreadPool();
      assert.ok(pool.loaded);
      // An explicit thread count: the monitor keeps out of the way, so the limit is this test's alone.
      const e = await embeddedEngine(t, { threads: 2 });
      const llama = await llamaRuntime(createLogger("silent"));
      const full = llama.maxThreads;
      t.after(() => {
        llama.maxThreads = full;
      });
      const generate = async (n: number) => {
        let tokens = 0;
        for await (const ev of e.generate(await greedyOptions(e, "Count the waves on the shore.", n)))
          if (ev.type === "done") tokens = ev.completionTokens;
        assert.equal(tokens, n);
      };

      llama.maxThreads = 1;
      const s0 = pool.stats();
      await generate(24);
      const s1 = pool.stats();
      assert.equal(s1.pooledComputes, s0.pooledComputes, "no step ran on two threads");
      assert.ok(s1.passthroughComputes - s0.passthroughComputes >= 24, "every step ran on one thread");

      llama.maxThreads = full;
      await generate(24);
      const s2 = pool.stats();
      assert.ok(s2.pooledComputes - s1.pooledComputes >= 24, "every step ran on two threads again");
    });
  },
);

interface ModelStats {
  threads?: number;
}

loadThreadPool(); // as the server does before its engine: engineThreads(0) depends on it
const IDEAL = engineThreads(0);

describe(
  "under CPU contention the engine gives way",
  { skip: IDEAL < 2 ? "one engine thread: nothing to give" : false },
  () => {
    let server: RunningServer;
    const competitors: ChildProcess[] = [];
    const headers = () => ({ authorization: `Bearer ${server.key}`, "content-type": "application/json" });
    const stats = async () =>
      (
        (await fetch(`${server.url}/v1/stats`, { headers: headers() }).then((r) => r.json())) as {
          models: Record<string, ModelStats>;
        }
      ).models[MODEL];
    const metric = async () => {
      const text = await fetch(`${server.opsUrl}/metrics`).then((r) => r.text());
      return Number(new RegExp(`^lucena_engine_threads\\{model="${MODEL}"\\} (\\d+)$`, "m").exec(text)?.[1]);
    };
    /** Streams a completion; resolves with how many content chunks came (until the end, or `signal`). */
    const stream = async (maxTokens: number, signal?: AbortSignal): Promise<number> => {
      let chunks = 0;
      try {
        const res = await fetch(`${server.url}/v1/chat/completions`, {
          method: "POST",
          headers: headers(),
          signal,
          body: JSON.stringify({
            model: MODEL,
            stream: true,
            max_tokens: maxTokens,
            messages: [{ role: "user", content: "Tell me a long story." }],
          }),
        });
        assert.equal(res.status, 200);
        for await (const part of res.body!)
          if (new TextDecoder().decode(part as Uint8Array).includes('"content"')) chunks++;
      } catch (err) {
        if (!signal?.aborted) throw err;
      }
      return chunks;
    };

    before(async () => {
      server = await startServer({ model: testModel(), config: { models: [{ parallel: 2 }] } });
    });
    after(async () => {
      await Promise.all(competitors.map(kill));
      assert.equal(await server.stop(), 0);
    });

    test("a process busy on one core makes the engine decode on fewer threads; they come back when it ends", async (t) => {
      // What this test shows needs the cores free at first: on a machine other work keeps busy, the engine rightly
      // never takes every core, and the threads coming back cannot be seen.
      const busy = await busyCores();
      if (busy > 0.5) {
        t.skip(`other processes keep ${busy.toFixed(1)} cores busy: the engine cannot be shown taking every core`);
        return;
      }
      // threads: 0: every core (persistent threads), once nothing else runs.
      const ideal = IDEAL;
      assert.equal(ideal, availableParallelism());
      await until("every engine thread", async () => (await stats()).threads === ideal);
      assert.equal(await metric(), ideal);

      // Streams run one after another while the competitor starts: the engine gives way while it decodes.
      const stop = new AbortController();
      const streaming = (async () => {
        let chunks = 0;
        while (!stop.signal.aborted) chunks += await stream(2000, stop.signal);
        return chunks;
      })();
      try {
        competitors.push(hog());
        const lowered = await until("fewer engine threads", async () => {
          const s = await stats();
          return s.threads !== undefined && s.threads < ideal && s.threads;
        });
        assert.ok(lowered >= 1);
        assert.equal(await metric(), lowered);
        const log = server.logs.map((l) =>
          l.startsWith("{") ? (JSON.parse(l) as { msg?: string; level?: number }) : {},
        );
        const entry = log.find((e) => e.msg === "engine threads lowered: other processes use the cores");
        assert.ok(entry, "the change is logged");
        assert.equal(entry.level, 30, "at info");
      } finally {
        stop.abort();
      }
      assert.ok((await streaming) > 0);

      // The competitor ends (and this process stops streaming, whose CPU the engine also counts as others').
      await kill(competitors.pop()!);
      await until("every engine thread back", async () => (await stats()).threads === ideal);
      assert.equal(await metric(), ideal);
      assert.ok(server.logs.some((l) => l.includes("engine threads raised: cores are free again")));
      // The engine still answers in full afterwards.
      const res = await fetch(`${server.url}/v1/chat/completions`, {
        method: "POST",
        headers: headers(),
        body: JSON.stringify({ model: MODEL, max_tokens: 32, messages: [{ role: "user", content: "Hello." }] }),
      });
      assert.equal(((await res.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens, 32);
    });
  },
);
