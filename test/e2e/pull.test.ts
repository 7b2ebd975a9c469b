import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createReadStream, mkdtempSync, readFileSync, statSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { testModel } from "../helpers/models.js";
import { cliPath } from "../helpers/paths.js";
import { startServer } from "../helpers/server.js";

const run = promisify(execFile);

/**
 * `lucena pull` against a local HTTP server serving a made GGUF (with byte ranges, as a hub does), `lucena models`
 * listing what is there, and `serve --model NAME` serving it by the name the list shows.
 */
describe("lucena pull and models", () => {
  const source = testModel({ size: "small" });
  let server: Server;
  let origin: string;
  const ranges: string[] = [];
  before(async () => {
    const size = statSync(source).size;
    server = createServer((req, res) => {
      const m = /bytes=(\d+)-(\d*)/.exec(req.headers.range ?? "");
      ranges.push(req.headers.range ?? "");
      const start = m ? Number(m[1]) : 0;
      const end = m?.[2] ? Number(m[2]) : size - 1;
      res.writeHead(m ? 206 : 200, {
        "content-length": end - start + 1,
        "accept-ranges": "bytes",
        "content-type": "application/octet-stream",
        ...(m ? { "content-range": `bytes ${start}-${end}/${size}` } : {}),
      });
      if (req.method === "HEAD") return res.end();
      createReadStream(source, { start, end }).pipe(res);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => server.close());

  test("pull downloads the file whole into the data directory; models lists it; serve --model NAME serves it", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "lucena-pull-"));
    const pulled = await run(process.execPath, [cliPath, "pull", `${origin}/coder-small.gguf`, "--data-dir", dataDir]);
    const path = join(dataDir, "models", "coder-small.gguf");
    assert.match(
      pulled.stdout,
      new RegExp(`${path.replace(/[.]/g, "\\.")}\\nServe it with: lucena serve --model coder-small\\.gguf`),
    );
    assert.match(pulled.stderr, /100% of 19\.9 MiB/, "progress, a line every tenth without a terminal");
    assert.ok(readFileSync(path).equals(readFileSync(source)), "the same bytes");

    const listed = await run(process.execPath, [cliPath, "models", "--json", "--data-dir", dataDir]);
    assert.deepEqual(JSON.parse(listed.stdout), [{ name: "coder-small.gguf", bytes: statSync(source).size, path }]);

    const served = await startServer({ dataDir, model: "coder-small" });
    try {
      const res = await fetch(`${served.url}/v1/chat/completions`, {
        method: "POST",
        headers: { authorization: `Bearer ${served.key}`, "content-type": "application/json" },
        body: JSON.stringify({
          model: "lucena-coder-latest",
          max_tokens: 2,
          messages: [{ role: "user", content: "hi" }],
        }),
      });
      assert.equal(res.status, 200);
      assert.ok(served.logs.some((l) => l.includes("model loaded") && l.includes("coder-small.gguf")));
    } finally {
      await served.stop();
    }
  });

  test("pull refuses what is not a hub URI or URL, exit 2", async () => {
    const res = await run(process.execPath, [cliPath, "pull", "./local.gguf"]).catch(
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal((res as { code: number }).code, 2);
    assert.match((res as { stderr: string }).stderr, /not a hub URI/);
  });
});
