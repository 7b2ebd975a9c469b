import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { CHECKED_AGAINST, incompatibility } from "../../src/engines/llama/thread-pool.js";
import { testModel } from "../helpers/models.js";
import { startServer } from "../helpers/server.js";

/** The thread pool's own line; the contention monitor's ("engine threads lowered", "raised") may come too. */
const poolLine = (l: string) => /engine threads (persist|are started anew)/.test(l);

/**
 * native/ggml-pool copies ggml struct layouts by hand: it is loaded only with the node-llama-cpp and llama.cpp it
 * was checked against, and otherwise stays off, which the engine says in one log line.
 */
describe("native/ggml-pool's version checks", () => {
  test("only the checked node-llama-cpp and llama.cpp pass", () => {
    const ok = { nodeLlamaCpp: CHECKED_AGAINST.nodeLlamaCpp[0], llamaCpp: CHECKED_AGAINST.llamaCpp[0] };
    assert.equal(incompatibility(ok), null);
    assert.match(
      incompatibility({ ...ok, nodeLlamaCpp: "3.23.0" }) ?? "",
      /node-llama-cpp 3\.23\.0 is not one native\/ggml-pool was checked against/,
    );
    assert.match(incompatibility({ ...ok, llamaCpp: "b9999" }) ?? "", /llama\.cpp b9999 is not one/);
    assert.match(incompatibility({ ...ok, llamaCpp: null }) ?? "", /release unknown/);
  });

  test("the installed versions are the checked ones: a server's threads persist, and it says so once", async () => {
    const server = await startServer({ model: testModel(), env: { LUCENA_LOG_LEVEL: "debug" } });
    try {
      const lines = server.logs.filter(poolLine);
      assert.equal(lines.length, 1, lines.join("\n"));
      assert.match(lines[0], /engine threads persist across decode steps/);
    } finally {
      await server.stop();
    }
  });

  test("a server whose module stays off says why in one log line, and serves", async () => {
    const server = await startServer({ model: testModel(), env: { LUCENA_THREAD_POOL: "off" } });
    try {
      const lines = server.logs.filter(poolLine);
      assert.equal(lines.length, 1, lines.join("\n"));
      const entry = JSON.parse(lines[0]) as { level: number; reason: string; msg: string };
      assert.equal(entry.level, 40, "a warning");
      assert.equal(entry.reason, "LUCENA_THREAD_POOL=off");
      const res = await fetch(`${server.url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${server.key}`, "content-type": "application/json" },
        body: JSON.stringify({
          model: "lucena-coder-latest",
          max_tokens: 4,
          messages: [{ role: "user", content: "hi" }],
        }),
      });
      assert.equal(res.status, 200);
    } finally {
      await server.stop();
    }
  });
});
