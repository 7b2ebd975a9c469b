import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { isAbsolute, join, resolve } from "node:path";
import { DEFAULT_MODEL } from "../../src/config/defaults.js";
import { ConfigError, loadConfig } from "../../src/config/load.js";

const dir = mkdtempSync(join(tmpdir(), "lucena-config-test-"));
after(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
/** Writes a config file (an object as JSON, or raw text) and returns its path. */
function file(content: unknown): string {
  const path = join(dir, `config-${n++}.json`);
  writeFileSync(path, typeof content === "string" ? content : JSON.stringify(content));
  return path;
}

const KEY_A = "sk-lucena-AAAAAAAAAAAAq7Rk2mWz9pLc4vTn8sJd1yFb";
const KEY_B = "sk-lucena-bbbbbbbb_-12G5hJ3kL7mN9pQ2rS4tU6vW8";

function assertConfigError(fn: () => unknown, ...mentions: (string | RegExp)[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(
      err instanceof ConfigError,
      `expected a ConfigError, got ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`,
    );
    for (const m of mentions) {
      if (typeof m === "string")
        assert.ok(err.message.includes(m), `message should mention ${JSON.stringify(m)}: ${err.message}`);
      else assert.match(err.message, m);
    }
    return true;
  });
}

describe("loadConfig: defaults", () => {
  test("with no file, env or CLI: the reference's model and its limits", () => {
    const c = loadConfig({}, {});
    assert.equal(c.models.length, 1);
    const m = c.models[0];
    assert.equal(m.id, "lucena-coder-latest");
    assert.equal(m.name, "Lucena Coder");
    assert.equal(m.max_input_tokens, 100000);
    assert.equal(m.max_output_tokens, 16000);
    assert.equal(m.context_window, 101000);
    assert.equal(m.source, undefined);
    assert.deepEqual(c.api_keys, []);
    assert.equal(c.always_stream, false);
    assert.equal(c.port, 8080);
    assert.equal(c.host, "127.0.0.1");
  });

  test("data_dir is made absolute", () => {
    const c = loadConfig({ dataDir: "rel/data" }, {});
    assert.ok(isAbsolute(c.data_dir));
    assert.equal(c.data_dir, resolve("rel/data"));
  });

  test("process.env is not read when an env object is given", () => {
    const saved = process.env.LUCENA_PORT;
    process.env.LUCENA_PORT = "1234";
    try {
      assert.equal(loadConfig({}, {}).port, 8080);
    } finally {
      if (saved === undefined) delete process.env.LUCENA_PORT;
      else process.env.LUCENA_PORT = saved;
    }
  });
});

describe("loadConfig: precedence file < env < CLI", () => {
  const path = file({ host: "10.0.0.1", port: 1111, data_dir: "/tmp/from-file", log_level: "warn" });

  test("the file overrides the defaults", () => {
    const c = loadConfig({ config: path }, {});
    assert.equal(c.host, "10.0.0.1");
    assert.equal(c.port, 1111);
    assert.equal(c.data_dir, "/tmp/from-file");
    assert.equal(c.log_level, "warn");
  });

  test("LUCENA_CONFIG names the file when the CLI does not", () => {
    assert.equal(loadConfig({}, { LUCENA_CONFIG: path }).port, 1111);
    const other = file({ port: 4444 });
    assert.equal(loadConfig({ config: other }, { LUCENA_CONFIG: path }).port, 4444);
  });

  test("the environment overrides the file", () => {
    const c = loadConfig(
      { config: path },
      { LUCENA_HOST: "10.0.0.2", LUCENA_PORT: "2222", LUCENA_DATA_DIR: "/tmp/from-env", LUCENA_LOG_LEVEL: "debug" },
    );
    assert.equal(c.host, "10.0.0.2");
    assert.equal(c.port, 2222);
    assert.equal(c.data_dir, "/tmp/from-env");
    assert.equal(c.log_level, "debug");
  });

  test("the command line overrides the environment and the file", () => {
    const c = loadConfig(
      { config: path, host: "10.0.0.3", port: 3333, dataDir: "/tmp/from-cli" },
      { LUCENA_HOST: "10.0.0.2", LUCENA_PORT: "2222", LUCENA_DATA_DIR: "/tmp/from-env" },
    );
    assert.equal(c.host, "10.0.0.3");
    assert.equal(c.port, 3333);
    assert.equal(c.data_dir, "/tmp/from-cli");
  });

  test("CLI port 0 (any free port) wins over the environment", () => {
    assert.equal(loadConfig({ port: 0 }, { LUCENA_PORT: "2222" }).port, 0);
  });

  test("the model source: file < LUCENA_MODEL < --model", () => {
    const p = file({ models: [{ id: "m1", source: "/models/file.gguf" }] });
    assert.equal(loadConfig({ config: p }, {}).models[0].source, "/models/file.gguf");
    assert.equal(loadConfig({ config: p }, { LUCENA_MODEL: "/models/env.gguf" }).models[0].source, "/models/env.gguf");
    assert.equal(
      loadConfig({ config: p, model: "/models/cli.gguf" }, { LUCENA_MODEL: "/models/env.gguf" }).models[0].source,
      "/models/cli.gguf",
    );
  });

  test("a model given in the file keeps the defaults for the fields it leaves out", () => {
    const p = file({ models: [{ id: "small", name: "Small", max_output_tokens: 512 }] });
    const m = loadConfig({ config: p }, {}).models[0];
    assert.equal(m.id, "small");
    assert.equal(m.name, "Small");
    assert.equal(m.max_output_tokens, 512);
    assert.equal(m.max_input_tokens, 100000);
    assert.equal(m.context_window, 101000);
  });
});

describe("loadConfig: API keys", () => {
  test("LUCENA_API_KEYS is a comma-separated list; blanks and spaces are ignored", () => {
    const c = loadConfig({}, { LUCENA_API_KEYS: ` ${KEY_A} ,, ${KEY_B},` });
    assert.deepEqual(c.api_keys, [KEY_A, KEY_B]);
  });

  test("keys from the file and the environment are both accepted", () => {
    const c = loadConfig({ config: file({ api_keys: [KEY_A] }) }, { LUCENA_API_KEYS: KEY_B });
    assert.deepEqual([...c.api_keys].sort(), [KEY_A, KEY_B].sort());
  });

  test("a malformed key is a ConfigError", () => {
    assertConfigError(() => loadConfig({}, { LUCENA_API_KEYS: `${KEY_A},sk-other-12345678` }), "api_keys");
    assertConfigError(() => loadConfig({}, { LUCENA_API_KEYS: "sk-lucena-short" }), "api_keys");
  });

  test("keys that are not random are refused, naming where they are, never the key, and how to make one", () => {
    const placeholders = ["sk-lucena-replace-with-a-long-random-key", "sk-lucena-your_key_here"];
    for (const key of placeholders) {
      for (const make of [
        () => loadConfig({}, { LUCENA_API_KEYS: key }),
        () => loadConfig({ config: file({ api_keys: [key] }) }, {}),
      ]) {
        assert.throws(make, (err: Error) => {
          assert.match(err.message, /placeholder/);
          assert.match(err.message, /lucena keys create/);
          assert.ok(!err.message.includes(key), "the key is never repeated");
          return true;
        });
      }
    }
    const short = "sk-lucena-abcdefghijklmnopqrstuvwxyz01234"; // 31 characters after the prefix
    assert.throws(
      () => loadConfig({}, { LUCENA_API_KEYS: `${KEY_A},${short}` }),
      /entry 2 of LUCENA_API_KEYS has 31 characters/,
    );
    assert.equal(loadConfig({}, { LUCENA_API_KEYS: `${short}5` }).api_keys.length, 1, "32 characters are enough");
    assertConfigError(() => loadConfig({ config: file({ api_keys: ["lucena-sk-AAAAAAAAAAAA"] }) }, {}), "api_keys");
  });
});

describe("loadConfig: invalid configurations are ConfigErrors with a useful message", () => {
  test("a port out of range", () => {
    assertConfigError(() => loadConfig({ port: 70000 }, {}), "port");
    assertConfigError(() => loadConfig({ config: file({ port: -1 }) }, {}), "port");
  });

  test("a port that is not an integer", () => {
    assertConfigError(() => loadConfig({}, { LUCENA_PORT: "eighty" }), "LUCENA_PORT", "eighty");
    assertConfigError(() => loadConfig({}, { LUCENA_PORT: "80.5" }), "LUCENA_PORT");
    assertConfigError(() => loadConfig({ config: file({ port: "8080" }) }, {}), "port");
  });

  test("an unknown top-level field", () => {
    assertConfigError(() => loadConfig({ config: file({ colour: "blue" }) }, {}), "colour");
  });

  test("an unknown model field", () => {
    assertConfigError(() => loadConfig({ config: file({ models: [{ id: "m", max_tokenz: 5 }] }) }, {}), "max_tokenz");
  });

  test("a model's kind: chat by default, or embedding (served here or upstream), nothing else", () => {
    assert.equal(loadConfig({}, {}).models[0].kind, "chat");
    const embed = loadConfig({ config: file({ models: [{ id: "e", kind: "embedding" }] }) }, {});
    assert.equal(embed.models[0].kind, "embedding");
    assertConfigError(() => loadConfig({ config: file({ models: [{ id: "m", kind: "rerank" }] }) }, {}), "kind");
    const up = loadConfig(
      { config: file({ models: [{ id: "e", kind: "embedding", upstream: { replicas: [{ url: "http://h:1" }] } }] }) },
      {},
    );
    assert.equal(up.models[0].kind, "embedding");
  });

  test("engine flags (-t, -c, -np) set the first model's threads, context size and parallel; --log-level the log", () => {
    const c = loadConfig(
      {
        threads: 3,
        ctxSize: 4096,
        parallel: 2,
        logLevel: "warn",
        config: file({ models: [{ id: "a" }, { id: "b" }] }),
      },
      {},
    );
    assert.deepEqual([c.models[0].threads, c.models[0].context_size, c.models[0].parallel], [3, 4096, 2]);
    assert.deepEqual(
      [c.models[1].threads, c.models[1].context_size],
      [DEFAULT_MODEL.threads, DEFAULT_MODEL.context_size],
    );
    assert.equal(c.log_level, "warn");
    assertConfigError(() => loadConfig({ logLevel: "loud" }, {}), "log_level");
  });

  test("an unknown log level", () => {
    assertConfigError(() => loadConfig({}, { LUCENA_LOG_LEVEL: "verbose" }), "log_level");
  });

  test("a default_shape that is not one of the model's shapes", () => {
    const p = file({
      models: [{ id: "m", shapes: { concise: { system_prompt: "Be brief." } }, default_shape: "verbose" }],
    });
    assertConfigError(() => loadConfig({ config: p }, {}), "verbose", '"m"');
  });

  test("connection limits: defaults, and a headers timeout above the request timeout is refused", () => {
    const c = loadConfig({}, {});
    assert.deepEqual([c.headers_timeout_seconds, c.request_timeout_seconds, c.max_connections], [20, 60, 1024]);
    assertConfigError(
      () => loadConfig({ config: file({ headers_timeout_seconds: 90, request_timeout_seconds: 60 }) }, {}),
      "headers_timeout_seconds",
    );
    for (const bad of [
      { request_timeout_seconds: 0 },
      { headers_timeout_seconds: -1 },
      { max_connections: 0 },
      { max_connections: 1.5 },
    ]) {
      assertConfigError(() => loadConfig({ config: file(bad) }, {}), Object.keys(bad)[0]);
    }
  });

  test("a default_shape that only a plain object inherits (toString, constructor) is not one of the shapes", () => {
    for (const name of ["toString", "constructor"])
      assertConfigError(() => loadConfig({ config: file({ models: [{ id: "m", default_shape: name }] }) }, {}), name);
  });

  test("a default_shape among the shapes is accepted", () => {
    const p = file({
      models: [{ id: "m", shapes: { concise: { system_prompt: "Be brief." } }, default_shape: "concise" }],
    });
    const m = loadConfig({ config: p }, {}).models[0];
    assert.equal(m.default_shape, "concise");
    assert.deepEqual(m.shapes, { concise: { system_prompt: "Be brief." } });
  });

  test("two models with the same id", () => {
    const p = file({ models: [{ id: "twin" }, { id: "twin", name: "other" }] });
    assertConfigError(() => loadConfig({ config: p }, {}), "twin");
  });

  test("two models with different ids are accepted", () => {
    const p = file({ models: [{ id: "one" }, { id: "two" }] });
    assert.deepEqual(
      loadConfig({ config: p }, {}).models.map((m) => m.id),
      ["one", "two"],
    );
  });

  test("no models at all", () => {
    assertConfigError(() => loadConfig({ config: file({ models: [] }) }, {}), "models");
  });

  test("a file that is not JSON", () => {
    const p = file("{ port: 8080, }");
    assertConfigError(() => loadConfig({ config: p }, {}), p, /JSON/);
  });

  test("a file that is JSON but not an object", () => {
    assertConfigError(() => loadConfig({ config: file("[1, 2]") }, {}), /JSON/);
    assertConfigError(() => loadConfig({ config: file("null") }, {}), /JSON/);
  });

  test("a file that does not exist", () => {
    const p = join(dir, "missing.json");
    assertConfigError(() => loadConfig({ config: p }, {}), p);
  });

  test("models that is not a list", () => {
    assertConfigError(() => loadConfig({ config: file({ models: { id: "m" } }) }, {}), "models");
  });
});

describe("loadConfig: the result", () => {
  test("is frozen, deeply", () => {
    const p = file({ api_keys: [KEY_A], models: [{ id: "m", shapes: { s: { system_prompt: "x" } } }] });
    const c = loadConfig({ config: p }, {});
    assert.ok(Object.isFrozen(c));
    assert.ok(Object.isFrozen(c.models));
    assert.ok(Object.isFrozen(c.models[0]));
    assert.ok(Object.isFrozen(c.models[0].shapes));
    assert.ok(Object.isFrozen(c.models[0].shapes.s));
    assert.ok(Object.isFrozen(c.api_keys));
    assert.throws(() => {
      (c as { port: number }).port = 1;
    }, TypeError);
    assert.throws(() => {
      (c.models[0] as { max_output_tokens: number }).max_output_tokens = 1;
    }, TypeError);
    assert.throws(() => c.api_keys.push(KEY_B), TypeError);
    assert.equal(c.port, 8080);
  });

  test("two loads do not share state", () => {
    const a = loadConfig({ port: 1 }, { LUCENA_API_KEYS: KEY_A });
    const b = loadConfig({}, {});
    assert.equal(b.port, 8080);
    assert.deepEqual(b.api_keys, []);
    assert.equal(a.port, 1);
  });
});

describe("loadConfig: upstream models", () => {
  test("--upstream serves the default model from those replicas, with the default upstream settings", () => {
    const c = loadConfig(
      { upstream: "http://10.0.0.5:8000/v1, http://10.0.0.6:8000" },
      { LUCENA_UPSTREAM_KEY: "replica-key" },
    );
    const u = c.models[0].upstream!;
    assert.deepEqual(u.replicas, [
      { url: "http://10.0.0.5:8000/v1", api_key: "replica-key" },
      { url: "http://10.0.0.6:8000", api_key: "replica-key" },
    ]);
    assert.equal(u.tokenizer, "auto");
    assert.equal(u.health_path, "/v1/models");
    assert.equal(u.retries, 2);
    assert.equal(c.models[0].source, undefined);
  });

  test("LUCENA_UPSTREAM works like --upstream, and --upstream-key wins over LUCENA_UPSTREAM_KEY", () => {
    const c = loadConfig(
      { upstreamKey: "from-cli" },
      { LUCENA_UPSTREAM: "http://a:1", LUCENA_UPSTREAM_KEY: "from-env" },
    );
    assert.deepEqual(c.models[0].upstream!.replicas, [{ url: "http://a:1", api_key: "from-cli" }]);
    const none = loadConfig({ upstream: "http://a:1" }, {});
    assert.equal(none.models[0].upstream!.replicas[0].api_key, null);
  });

  test("a file's upstream block keeps the defaults for what it leaves out; a replica without a key gets none", () => {
    const c = loadConfig(
      {
        config: file({
          models: [
            { id: "big", upstream: { replicas: [{ url: "http://gpu:8000/v1" }], model: "Qwen/Qwen2.5", retries: 0 } },
          ],
        }),
      },
      {},
    );
    const u = c.models[0].upstream!;
    assert.deepEqual(u.replicas, [{ url: "http://gpu:8000/v1", api_key: null }]);
    assert.equal(u.model, "Qwen/Qwen2.5");
    assert.equal(u.retries, 0);
    assert.equal(u.health_interval_seconds, 2);
    assert.equal(c.models[0].max_input_tokens, 100000, "model defaults still apply");
  });

  test("--upstream keeps the file's upstream settings and replaces its replicas", () => {
    const path = file({ models: [{ upstream: { replicas: [{ url: "http://old:1" }], health_path: "/health" } }] });
    const c = loadConfig({ config: path, upstream: "http://new:2" }, {});
    assert.deepEqual(c.models[0].upstream!.replicas, [{ url: "http://new:2", api_key: null }]);
    assert.equal(c.models[0].upstream!.health_path, "/health");
  });

  test("invalid upstream configurations are ConfigErrors", () => {
    assertConfigError(() => loadConfig({ model: "/m.gguf", upstream: "http://a:1" }, {}), "--model", "--upstream");
    assertConfigError(
      () =>
        loadConfig(
          { config: file({ models: [{ source: "/m.gguf", upstream: { replicas: [{ url: "http://a:1" }] } }] }) },
          {},
        ),
      "source",
      "upstream",
    );
    assertConfigError(() => loadConfig({ config: file({ models: [{ upstream: { replicas: [] } }] }) }, {}), "replicas");
    assertConfigError(
      () => loadConfig({ config: file({ models: [{ upstream: { replicas: [{ url: "ftp://a" }] } }] }) }, {}),
      "url",
    );
    assertConfigError(
      () =>
        loadConfig(
          { config: file({ models: [{ upstream: { replicas: [{ url: "http://a:1" }], nonsense: 1 } }] }) },
          {},
        ),
      "upstream",
    );
    for (const bad of [
      { max_in_flight_per_replica: 0 },
      { max_in_flight_per_replica: 1.5 },
      { first_token_timeout_seconds: 0 },
      { idle_timeout_seconds: -1 },
    ]) {
      const field = Object.keys(bad)[0];
      assertConfigError(
        () =>
          loadConfig({ config: file({ models: [{ upstream: { replicas: [{ url: "http://a:1" }], ...bad } }] }) }, {}),
        field,
      );
    }
  });

  test("the upstream bounds have their documented defaults: seconds, not minutes", () => {
    const u = loadConfig({ upstream: "http://a:1" }, {}).models[0].upstream!;
    assert.deepEqual(
      [
        u.first_byte_timeout_seconds,
        u.first_token_timeout_seconds,
        u.idle_timeout_seconds,
        u.max_in_flight_per_replica,
      ],
      [10, 120, 30, 256],
    );
  });

  test("the embedded engine's new settings have their documented defaults", () => {
    const m = loadConfig({}, {}).models[0];
    assert.equal(m.batch_size, 0);
    assert.equal(m.flash_attention, false);
    assert.equal(m.mmap, false);
  });
});
