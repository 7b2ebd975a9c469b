import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { testModel } from "../helpers/models.js";
import { repoRoot } from "../helpers/paths.js";
import { startServer, type RunningServer } from "../helpers/server.js";

const run = promisify(execFile);

/** python3 with the openai package, or why the test cannot run here. */
function pythonWithOpenAI(): string | null {
  const probe = spawnSync("python3", ["-c", "import openai"], { encoding: "utf8" });
  if (probe.error) return "python3 is not installed";
  if (probe.status !== 0) return "python3 has no openai package (pip install openai)";
  return null;
}

const missing = pythonWithOpenAI();

/** The README's first Python block. */
function readmePython(): string {
  const code = /```python\n([^]*?)```/.exec(readFileSync(join(repoRoot, "README.md"), "utf8"))?.[1];
  assert.ok(code, "the README has a Python example");
  return code;
}

const noPython = spawnSync("python3", ["--version"]).error ? "python3 is not installed" : false;

test(
  "the README's Python example is valid Python (the reference's had an indentation error)",
  { skip: noPython },
  () => {
    const res = spawnSync("python3", ["-c", "import ast, sys; ast.parse(sys.stdin.read())"], {
      input: readmePython(),
      encoding: "utf8",
    });
    assert.equal(res.status, 0, res.stderr);
  },
);

/** The README's Python example, run as it is against the real server. */
describe("the README's Python example", { skip: missing ? `${missing}: the example is not run` : false }, () => {
  let server: RunningServer;
  before(async () => {
    server = await startServer({ model: testModel() });
  });
  after(async () => {
    await server.stop();
  });

  test("streams an answer with the openai package", async () => {
    const { stdout } = await run("python3", ["-c", readmePython()], {
      env: { ...process.env, LUCENA_API_KEY: server.key, LUCENA_BASE_URL: `${server.url}/v1` },
    });
    assert.ok(stdout.trim().length > 0, "it printed the streamed answer");
  });
});
