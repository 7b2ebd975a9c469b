import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { testModel } from "../helpers/models.js";
import { startServer, type RunningServer } from "../helpers/server.js";

/**
 * A clean exit whatever the engine is doing when SIGTERM arrives: exit code 0, no signal, nothing from the C
 * heap's checks or a crash on stderr. The model has the bench model's vocabulary (so the engine's large logits
 * and KV buffers take the native module's path) and runs several sequences on two threads (so decode steps use
 * the module's kept thread pools).
 */
const PARALLEL = 4;
const model = (extra: Record<string, unknown> = {}) => ({
  models: [
    { id: "m", source: testModel({ size: "small" }), parallel: PARALLEL, threads: 2, context_size: 2048, ...extra },
  ],
});
const NATIVE_FAILURE = /double free|corruption|free\(\)|malloc|Aborted|Segmentation|core dumped|GGML_ASSERT/i;

/** Sends SIGTERM and resolves with how the process ended. */
function terminate(server: RunningServer): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  const ended = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    if (server.proc.exitCode !== null || server.proc.signalCode !== null)
      resolve({ code: server.proc.exitCode, signal: server.proc.signalCode });
    else server.proc.once("exit", (code, signal) => resolve({ code, signal }));
  });
  server.proc.kill("SIGTERM");
  return ended;
}

function assertClean(server: RunningServer, how: { code: number | null; signal: NodeJS.Signals | null }): void {
  const native = server.logs.filter((l) => NATIVE_FAILURE.test(l) && !l.startsWith("{"));
  assert.deepEqual(how, { code: 0, signal: null }, `exit code 0, no signal; stderr: ${native.join(" | ")}`);
  assert.deepEqual(native, []);
  assert.ok(
    server.logs.some((l) => l.includes('"msg":"stopped"')),
    "it got through its shutdown",
  );
}

/** Opens `n` streams and resolves once each has sent its first chunk, with promises of their whole bodies. */
async function openStreams(server: RunningServer, n: number, maxTokens: number): Promise<Promise<string>[]> {
  const bodies: Promise<string>[] = [];
  const firsts: Promise<void>[] = [];
  for (let i = 0; i < n; i++) {
    const res = fetch(`${server.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${server.key}`, "content-type": "application/json" },
      body: JSON.stringify({
        model: "m",
        stream: true,
        max_tokens: maxTokens,
        messages: [{ role: "user", content: `stream ${i} `.repeat(30) }],
      }),
    });
    let first!: () => void;
    firsts.push(new Promise<void>((r) => (first = r)));
    bodies.push(
      res
        .then(async (r) => {
          let text = "";
          const decoder = new TextDecoder();
          for await (const chunk of r.body!) {
            text += decoder.decode(chunk as Uint8Array, { stream: true });
            if (text.includes('"content"')) first();
          }
          first();
          return text;
        })
        .catch((err: Error) => (first(), `cut: ${err.message}`)),
    );
  }
  await Promise.all(firsts);
  return bodies;
}

describe("shutdown of the embedded engine (native side)", { concurrency: false }, () => {
  test("SIGTERM while every sequence streams, with no grace: exit 0, every round", async () => {
    for (let round = 0; round < 3; round++) {
      const server = await startServer({ config: { ...model(), shutdown_grace_seconds: 0 } });
      const bodies = await openStreams(server, PARALLEL, 1500);
      assertClean(server, await terminate(server));
      for (const body of await Promise.all(bodies)) assert.match(body, /shutting down|\[DONE\]|cut:/);
    }
  });

  test("SIGTERM after concurrent streams have ended: exit 0", async () => {
    const server = await startServer({ config: model() });
    const bodies = await openStreams(server, PARALLEL, 24);
    for (const body of await Promise.all(bodies)) assert.match(body, /"finish_reason":"length"/);
    assertClean(server, await terminate(server));
  });

  test("SIGTERM while streams outlast the grace period: they are cut, exit 0", async () => {
    const server = await startServer({ config: { ...model(), shutdown_grace_seconds: 1 } });
    const bodies = await openStreams(server, PARALLEL, 1500);
    assertClean(server, await terminate(server));
    for (const body of await Promise.all(bodies)) assert.match(body, /shutting down|cut:/);
  });

  test("SIGTERM after load with no traffic: exit 0", async () => {
    const server = await startServer({ config: model() });
    assertClean(server, await terminate(server));
  });

  test("SIGTERM while the model is still loading: exit 0", async () => {
    const server = await startServer({ config: model(), waitReady: false });
    assertClean(server, await terminate(server));
  });
});
