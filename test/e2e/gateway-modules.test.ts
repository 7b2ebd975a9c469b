import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { pathToFileURL } from "node:url";
import { testModel } from "../helpers/models.js";
import { startServer, type RunningServer } from "../helpers/server.js";

/**
 * A gateway (every model upstream) never loads node-llama-cpp: the server process runs with a module resolve hook
 * (Node's module.register) that writes down every module of node-llama-cpp it resolves. The same hook on a gateway
 * that counts with a GGUF tokenizer, which does need llama.cpp, shows that the hook sees such a load.
 */
const dir = mkdtempSync(join(tmpdir(), "lucena-modules-"));
const hooks = join(dir, "hooks.mjs");
writeFileSync(
  hooks,
  `import { appendFileSync } from "node:fs";
export async function resolve(specifier, context, next) {
  const found = await next(specifier, context);
  if (found.url.includes("/node_modules/node-llama-cpp/")) appendFileSync(process.env.LUCENA_TEST_MODULE_LOG, found.url + "\\n");
  return found;
}
`,
);
const register = join(dir, "register.mjs");
writeFileSync(
  register,
  `import { register } from "node:module";\nregister(${JSON.stringify(pathToFileURL(hooks).href)});\n`,
);

/** A port nothing listens on: the replica is down, which a gateway starts with all the same. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const running: RunningServer[] = [];
after(async () => {
  for (const s of running) await s.stop();
});

/** Starts a gateway with `upstream`, and returns the node-llama-cpp modules its process resolved once it was ready. */
async function llamaModulesOf(name: string, upstream: Record<string, unknown>): Promise<string[]> {
  const log = join(dir, `${name}.log`);
  writeFileSync(log, "");
  const server = await startServer({
    config: {
      models: [{ id: "gw", upstream: { replicas: [{ url: `http://127.0.0.1:${await closedPort()}` }], ...upstream } }],
    },
    env: { NODE_OPTIONS: `--import=${pathToFileURL(register).href}`, LUCENA_TEST_MODULE_LOG: log },
  });
  running.push(server);
  const models = await fetch(`${server.url}/v1/models`, { headers: { authorization: `Bearer ${server.key}` } });
  assert.equal(models.status, 200);
  return readFileSync(log, "utf8").split("\n").filter(Boolean);
}

describe("what a gateway loads", () => {
  test("a gateway of upstream models never loads node-llama-cpp", async () => {
    assert.deepEqual(await llamaModulesOf("endpoint", { tokenizer: "auto" }), []);
  });

  test("the hook sees node-llama-cpp where it is needed: a gateway counting with a GGUF tokenizer loads it", async () => {
    const modules = await llamaModulesOf("gguf", { tokenizer: testModel({ size: "tiny" }) });
    assert.ok(modules.length > 0, "node-llama-cpp was resolved");
  });
});
