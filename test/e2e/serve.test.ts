import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { promisify, stripVTControlCharacters } from "node:util";
import OpenAI from "openai";
import { readGgufMetadata } from "../../src/gguf/reader.js";
import { testModel } from "../helpers/models.js";
import { cliPath, NO_SHARED, repoRoot, vocabDir } from "../helpers/paths.js";
import { startServer, TEST_KEY } from "../helpers/server.js";
import { until } from "../helpers/until.js";

const MODEL = "lucena-coder-latest";
const run = promisify(execFile);

function authed(key: string, body?: unknown): RequestInit {
  return {
    method: body === undefined ? "GET" : "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  };
}

describe("lucena serve", () => {
  test("with no model configured, it makes the demo model, serves it and says its answers are random", async () => {
    const server = await startServer();
    try {
      assert.ok(
        existsSync(join(server.dataDir, "models", "lucena-demo-tiny.gguf")),
        "the demo model is made in the data directory",
      );
      const models = (await fetch(`${server.url}/v1/models`, authed(server.key)).then((r) => r.json())) as {
        data: Array<{ description: string }>;
      };
      assert.match(models.data[0].description, /random/);
      assert.match(models.data[0].description, /--model/);
      assert.ok(
        server.logs.some((l) => l.includes("random text") && l.includes('"level":40')),
        "a warning at start says so too",
      );
      const client = new OpenAI({ apiKey: server.key, baseURL: `${server.url}/v1` });
      const res = await client.chat.completions.create({
        model: MODEL,
        max_tokens: 5,
        messages: [{ role: "user", content: "hi" }],
      });
      assert.equal(res.usage?.completion_tokens, 5);
      // Without max_tokens, the demo model's default answer length, not the whole context's worth of noise.
      const plain = await client.chat.completions.create({ model: MODEL, messages: [{ role: "user", content: "hi" }] });
      assert.equal(plain.usage?.completion_tokens, 256);
      assert.equal(plain.choices[0]?.finish_reason, "length");
    } finally {
      await server.stop();
    }
  });

  test("it listens at once; with on_load_failure degrade, a model that cannot be fetched answers 503 with Retry-After, the rest of the API serves", async () => {
    const server = await startServer({
      model: "hf:lucena-test/unreachable/model.gguf",
      config: { on_load_failure: "degrade" },
      waitReady: false,
    });
    try {
      const models = await fetch(`${server.url}/v1/models`, authed(server.key));
      assert.equal(models.status, 200, "the model list needs no loaded model");
      const body = { model: MODEL, messages: [{ role: "user", content: "hi" }] };
      for (const path of ["/v1/chat/completions", "/v1/tokens/count"]) {
        const res = await fetch(`${server.url}${path}`, authed(server.key, body));
        assert.equal(res.status, 503, path);
        assert.ok(Number(res.headers.get("retry-after")) > 0, `${path}: Retry-After`);
        const err = (await res.json()) as { error: { type: string; code: number } };
        assert.deepEqual([err.error.type, err.error.code], ["server_error", 503]);
      }
      const stats = await fetch(`${server.url}/v1/stats`, authed(server.key)).then((r) => r.json());
      // The reference's three figures first (docs/api.md: more fields may follow them).
      assert.deepEqual(Object.keys(stats as object).slice(0, 3), ["heap_used_mb", "heap_total_mb", "rss_mb"]);
      // Still trying to download (loading), or given up (failed): never ready.
      assert.ok(
        ["loading", "failed"].includes((stats as { models: Record<string, { status: string }> }).models[MODEL].status),
      );
    } finally {
      await server.stop();
    }
  });

  test("a config file sets the model's identity, limits and shapes; count and completion honour them", async () => {
    const server = await startServer({
      model: testModel(),
      config: {
        models: [
          {
            id: "house-model",
            name: "House",
            max_output_tokens: 64,
            context_size: 512,
            system_prompt: null,
            default_shape: "terse",
            shapes: {
              terse: { system_prompt: "Be terse.", temperature: 0 },
              chatty: { system_prompt: "Talk a lot, and then some more." },
            },
          },
        ],
      },
    });
    try {
      const models = (await fetch(`${server.url}/v1/models`, authed(server.key)).then((r) => r.json())) as {
        data: Array<Record<string, unknown>>;
      };
      assert.equal(models.data[0].id, "house-model");
      assert.equal(models.data[0].default_shape, "terse");
      assert.deepEqual(models.data[0].available_shapes, ["terse", "chatty"]);

      const messages = [{ role: "user", content: "hello" }];
      type Count = {
        usage: { prompt_tokens: number };
        limits: Record<string, number>;
        _lucena: Record<string, unknown>;
      };
      const terse = (await fetch(
        `${server.url}/v1/tokens/count`,
        authed(server.key, { model: "house-model", messages }),
      ).then((r) => r.json())) as Count;
      assert.deepEqual(terse._lucena, { system_prompt_source: "shape", trimmed_messages: 1, shape_id: "terse" });
      assert.equal(terse.limits.output_limit, 64);
      assert.ok(terse.limits.context_size >= 512, "context_size is what the engine allocated");
      const chatty = (await fetch(
        `${server.url}/v1/tokens/count`,
        authed(server.key, { model: "house-model", shape: "chatty", messages }),
      ).then((r) => r.json())) as Count;
      assert.equal(chatty._lucena.shape_id, "chatty");
      assert.ok(chatty.usage.prompt_tokens > terse.usage.prompt_tokens, "the longer shape prompt counts more tokens");

      const client = new OpenAI({ apiKey: server.key, baseURL: `${server.url}/v1` });
      const res = (await client.chat.completions.create({
        model: "house-model",
        messages: [{ role: "user", content: "hello" }],
        shape: "chatty",
      } as never)) as OpenAI.Chat.Completions.ChatCompletion;
      assert.equal(res.usage?.prompt_tokens, chatty.usage.prompt_tokens);
      assert.ok(
        (res.usage?.completion_tokens ?? 0) <= 64,
        "without max_tokens the answer stays within the output limit",
      );
      await assert.rejects(
        client.chat.completions.create({
          model: "house-model",
          max_tokens: 65,
          messages: [{ role: "user", content: "x" }],
        }),
        /output limit/,
      );
    } finally {
      await server.stop();
    }
  });

  test(
    "a model with a real tokenizer and Jinja chat template (phi-3) serves completions and counts",
    { skip: vocabDir ? false : NO_SHARED },
    async () => {
      const server = await startServer({ model: testModel({ vocab: "phi-3" }) });
      try {
        const client = new OpenAI({ apiKey: server.key, baseURL: `${server.url}/v1` });
        const messages = [
          { role: "system" as const, content: "You are terse." },
          { role: "user" as const, content: "Hello there, how are you?" },
        ];
        const count = (await fetch(
          `${server.url}/v1/tokens/count`,
          authed(server.key, { model: MODEL, messages, max_tokens: 6 }),
        ).then((r) => r.json())) as { usage: { prompt_tokens: number }; _lucena: { system_prompt_source: string } };
        assert.equal(count._lucena.system_prompt_source, "request");
        const stream = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 6, stream: true });
        let usage: OpenAI.Completions.CompletionUsage | undefined;
        let text = "";
        for await (const chunk of stream) {
          text += chunk.choices[0]?.delta?.content || "";
          usage = chunk.usage ?? usage;
        }
        assert.ok(text.length > 0);
        assert.equal(usage?.prompt_tokens, count.usage.prompt_tokens);
        assert.equal(usage?.completion_tokens, 6);
      } finally {
        await server.stop();
      }
    },
  );

  test("a model that ends its turn finishes with finish_reason stop, streamed and not", async () => {
    const server = await startServer({ model: testModel({ endsTurn: true }) });
    try {
      const client = new OpenAI({ apiKey: server.key, baseURL: `${server.url}/v1` });
      const res = await client.chat.completions.create({
        model: MODEL,
        max_tokens: 50,
        messages: [{ role: "user", content: "hi" }],
      });
      assert.equal(res.choices[0].finish_reason, "stop");
      assert.equal(res.choices[0].message.content, "", "the end-of-turn token is not text");
      assert.equal(res.usage?.completion_tokens, 1);
      const stream = await client.chat.completions.create({
        model: MODEL,
        max_tokens: 50,
        stream: true,
        messages: [{ role: "user", content: "hi" }],
      });
      const finishes: Array<string | null> = [];
      for await (const chunk of stream) if (chunk.choices[0]) finishes.push(chunk.choices[0].finish_reason);
      assert.equal(finishes.at(-1), "stop");
    } finally {
      await server.stop();
    }
  });

  test("ignore_eos: a model that ends its turn at once answers to max_tokens instead", async () => {
    const server = await startServer({ model: testModel({ endsTurn: true }) });
    try {
      const ask = async (extra: Record<string, unknown>) => {
        const res = await fetch(
          `${server.url}/v1/chat/completions`,
          authed(server.key, { model: MODEL, max_tokens: 12, messages: [{ role: "user", content: "hi" }], ...extra }),
        );
        assert.equal(res.status, 200);
        return (await res.json()) as {
          choices: Array<{ finish_reason: string }>;
          usage: { completion_tokens: number };
        };
      };
      const ends = await ask({});
      assert.deepEqual([ends.choices[0].finish_reason, ends.usage.completion_tokens], ["stop", 1]);
      const held = await ask({ ignore_eos: true });
      assert.deepEqual([held.choices[0].finish_reason, held.usage.completion_tokens], ["length", 12]);
    } finally {
      await server.stop();
    }
  });

  test("SIGTERM: a stream that ends within the grace period ends normally, the rest get an error event and [DONE]; exit 0", async () => {
    const server = await startServer({ model: testModel(), config: { shutdown_grace_seconds: 2 } });
    // Resolves once the response has started (the request was accepted), with a promise of its whole body.
    const open = async (maxTokens: number) => {
      const res = await fetch(
        `${server.url}/v1/chat/completions`,
        authed(server.key, {
          model: MODEL,
          stream: true,
          max_tokens: maxTokens,
          messages: [{ role: "user", content: "go" }],
        }),
      );
      assert.equal(res.status, 200);
      return { text: res.text() };
    };
    const long = await Promise.all([open(7000), open(7000)]).then((l) => l.map((x) => x.text));
    await new Promise((r) => setTimeout(r, 300)); // both are generating
    const short = (await open(5)).text; // a few tokens: far within the grace period
    const exit = server.stop("SIGTERM");
    for (const text of await Promise.all(long)) {
      const events = text.trimEnd().split("\n\n");
      assert.equal(events.at(-1), "data: [DONE]");
      assert.deepEqual(JSON.parse(events.at(-2)!.slice(6)), {
        error: { message: "The server is shutting down.", type: "server_error", code: 503 },
      });
      assert.ok(
        events.some((e) => e.includes('"content"')),
        "it had been streaming",
      );
    }
    const shortEvents = (await short).trimEnd().split("\n\n");
    assert.equal(shortEvents.at(-1), "data: [DONE]");
    assert.match(shortEvents.at(-2)!, /"finish_reason":"length"/, "a stream that could finish in time finished");
    assert.equal(await exit, 0);
  });

  test("a bad config file stops start-up with a clear message and exit code 2", async () => {
    const dir = mkdtempSync(join(tmpdir(), "lucena-cfg-"));
    const file = join(dir, "bad.json");
    await import("node:fs").then((fs) => fs.writeFileSync(file, JSON.stringify({ port: "eighty" })));
    const res = await run(process.execPath, [cliPath, "serve", "--config", file]).catch(
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal((res as { code: number }).code, 2);
    assert.match((res as { stderr: string }).stderr, /invalid configuration[\s\S]*\/port/);
  });
});

describe("start-up stumbles", () => {
  const fail = (args: string[], env: Record<string, string> = {}) =>
    run(process.execPath, [cliPath, ...args], { env: { ...process.env, ...env } }).then(
      () => ({ code: 0, stderr: "" }),
      (e: { code: number; stderr: string }) => e,
    );

  test("a port in use: one line naming the port and the flag that changes it, exit 1, no stack trace", async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve));
    const port = (taken.address() as AddressInfo).port;
    try {
      const dataDir = mkdtempSync(join(tmpdir(), "lucena-port-"));
      const common = ["--host", "127.0.0.1", "--data-dir", dataDir, "--model", testModel()];
      const api = await fail(["serve", ...common, "--port", String(port), "--ops-port", "0"]);
      assert.equal(api.code, 1);
      assert.equal(api.stderr.trim().split("\n").length, 1, api.stderr);
      assert.match(api.stderr, new RegExp(`port ${port} on 127\\.0\\.0\\.1 is already in use.*--port`));
      const ops = await fail(["serve", ...common, "--port", "0", "--ops-port", String(port)]);
      assert.equal(ops.code, 1);
      assert.match(ops.stderr, /operations listener's port .* --ops-port/);
      assert.ok(!/\bat \S+ \(/.test(api.stderr + ops.stderr), "no stack trace");
    } finally {
      taken.close();
    }
  });

  test("a model file that does not exist: exit 2 before listening, naming the path", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "lucena-model-"));
    const path = join(dataDir, "no-such-model.gguf");
    const res = await fail(["serve", "--data-dir", dataDir, "--port", "0", "--ops-port", "0", "--model", path]);
    assert.equal(res.code, 2);
    assert.match(res.stderr, new RegExp(`the model file ${path.replace(/[.]/g, "\\.")} does not exist`));
  });

  test("a model that fails to load ends the process with exit 1 and one line saying why", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "lucena-model-"));
    const path = join(dataDir, "broken.gguf");
    writeFileSync(path, "this is not a GGUF file");
    const res = await fail(["serve", "--data-dir", dataDir, "--port", "0", "--ops-port", "0", "--model", path]);
    assert.equal(res.code, 1);
    const last = res.stderr.trim().split("\n").at(-1)!;
    assert.match(last, /^lucena: model "lucena-coder-latest" could not be loaded: .+ \(on_load_failure "degrade"/);
  });

  test("llama.cpp's flags -t, -c and -np set the engine of the default model", async () => {
    const server = await startServer({ model: testModel(), args: ["-t", "1", "-c", "1024", "-np", "2"] });
    try {
      const res = await fetch(
        `${server.url}/v1/tokens/count`,
        authed(server.key, { model: MODEL, messages: [{ role: "user", content: "hi" }] }),
      );
      const counted = (await res.json()) as { limits: { context_size: number } };
      assert.equal(counted.limits.context_size, 1024);
      const stats = (await fetch(`${server.url}/v1/stats`, authed(server.key)).then((r) => r.json())) as {
        models: Record<string, { sequences: number; threads: number }>;
      };
      assert.deepEqual([stats.models[MODEL].sequences, stats.models[MODEL].threads], [2, 1]);
    } finally {
      await server.stop();
    }
  });

  test("on a terminal the log is for people (time, level, message); --log-format json keeps JSON there", async (t) => {
    if (!existsSync("/usr/bin/script")) return t.skip("util-linux's script, which gives a pseudo-terminal, is absent");
    /** The server's first lines up to "listening", written to a pseudo-terminal. */
    const onTerminal = async (extra: string): Promise<string> => {
      const dataDir = mkdtempSync(join(tmpdir(), "lucena-tty-"));
      const cmd = `${process.execPath} ${cliPath} serve --port 0 --ops-port 0 --data-dir ${dataDir} --model ${testModel()} ${extra}`;
      const child = spawn("/usr/bin/script", ["-qfec", cmd, "/dev/null"], {
        detached: true,
        env: { ...process.env, LUCENA_API_KEYS: TEST_KEY, TERM: "xterm" },
      });
      let out = "";
      child.stdout.on("data", (b: Buffer) => (out += b.toString()));
      try {
        // Its own "listening" line (after Fastify's "Server listening at" and the operations listener's).
        await until(
          "the server to say it listens",
          () => /(: listening\s*$|"msg":"listening")/m.test(stripVTControlCharacters(out)) || undefined,
        );
      } finally {
        process.kill(-child.pid!, "SIGTERM");
      }
      return out;
    };
    const plain = stripVTControlCharacters(await onTerminal(""));
    const line = plain.split(/\r?\n/).find((l) => /: listening\s*$/.test(l));
    assert.ok(line, plain);
    assert.match(line, /^\[\d\d:\d\d:\d\d(\.\d+)?\] INFO.*: listening/, "local time, the level's name, the message");
    assert.ok(!plain.split(/\r?\n/).some((l) => l.startsWith('{"level"')), "no JSON on the terminal");
    const json = await onTerminal("--log-format json");
    const entry = json.split(/\r?\n/).find((l) => l.includes('"msg":"listening"'));
    assert.ok(entry, json);
    assert.match((JSON.parse(entry) as { time: string }).time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, "ISO time");
  });

  test("npm start starts the build npm install made, without compiling again", async () => {
    const entry = join(repoRoot, "dist", "src", "cli", "main.js");
    const before = statSync(entry).mtimeMs;
    const dataDir = mkdtempSync(join(tmpdir(), "lucena-start-"));
    const child = spawn(
      "npm",
      ["start", "--silent", "--", "--port", "0", "--ops-port", "0", "--data-dir", dataDir, "--model", testModel()],
      {
        cwd: repoRoot,
        env: { ...process.env, LUCENA_API_KEYS: TEST_KEY },
        detached: true,
      },
    );
    let out = "";
    child.stdout.on("data", (b: Buffer) => (out += b.toString()));
    try {
      await until("npm start to listen", () => /"msg":"listening"/.test(out) || undefined);
    } finally {
      process.kill(-child.pid!, "SIGTERM");
    }
    assert.equal(statSync(entry).mtimeMs, before, "dist/ was not written: nothing was compiled");
  });

  test("lucena --version prints the package's version", async () => {
    const { stdout } = await run(process.execPath, [cliPath, "--version"]);
    const pkg = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as { version: string };
    assert.equal(stdout.trim(), pkg.version);
  });

  test("a placeholder key in LUCENA_API_KEYS stops start-up with exit 2, never echoing the key", async () => {
    const key = "sk-lucena-your_key_here";
    const res = await fail(["serve", "--port", "0", "--ops-port", "0"], { LUCENA_API_KEYS: key });
    assert.equal(res.code, 2);
    assert.match(res.stderr, /placeholder.*lucena keys create/);
    assert.ok(!res.stderr.includes(key));
  });
});

describe("lucena keys create: what an operator gets wrong", () => {
  const keys = (dataDir: string, ...args: string[]) =>
    run(process.execPath, [cliPath, "keys", "create", "--json", "--data-dir", dataDir, ...args]).then(
      (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
      (e: { code: number; stdout: string; stderr: string }) => e,
    );

  test("--expires without a unit is refused; a model not in the config is refused, or warned of without one", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "lucena-keys-"));
    const bare = await keys(dataDir, "--name", "a", "--expires", "90");
    assert.equal(bare.code, 2);
    assert.match(bare.stderr, /expires needs a unit/);
    const config = join(dataDir, "config.json");
    writeFileSync(config, JSON.stringify({ models: [{ id: "coder" }, { id: "chat" }] }));
    const strict = await keys(dataDir, "--name", "b", "--models", "coder,nosuch", "--config", config);
    assert.equal(strict.code, 2);
    assert.match(strict.stderr, /"nosuch" is not among the models .*\(coder, chat\)/);
    const loose = await keys(dataDir, "--name", "c", "--models", "nosuch");
    assert.equal(loose.code, 0);
    assert.match(loose.stderr, /warning: "nosuch" is not among the models of the default configuration/);
    assert.match(JSON.parse(loose.stdout).key as string, /^sk-lucena-/);
    const list = await run(process.execPath, [cliPath, "keys", "list", "--json", "--data-dir", dataDir]);
    assert.deepEqual(
      (JSON.parse(list.stdout) as { name: string }[]).map((k) => k.name),
      ["c"],
      "nothing was made of the refused requests",
    );
  });

  test("a second key of the same name is made, with a warning naming the first", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "lucena-keys-"));
    const first = await keys(dataDir, "--name", "ci");
    assert.equal(first.stderr, "");
    const second = await keys(dataDir, "--name", "ci");
    assert.equal(second.code, 0);
    const id = (JSON.parse(first.stdout) as { id: string }).id;
    assert.match(second.stderr, new RegExp(`warning: a key named "ci" already exists \\(${id}\\)`));
  });
});

describe("lucena make-model", () => {
  test("writes a tiny model with its own tokenizer, and one with a given vocabulary", async () => {
    const dir = mkdtempSync(join(tmpdir(), "lucena-make-"));
    const own = join(dir, "own.gguf");
    const { stdout } = await run(process.execPath, [
      cliPath,
      "make-model",
      "--out",
      own,
      "--size",
      "tiny",
      "--seed",
      "7",
    ]);
    assert.match(stdout, /wrote .*own\.gguf: tiny, .*M parameters, vocabulary 2048/);
    const meta = readGgufMetadata(own);
    assert.deepEqual(
      meta.get("tokenizer.ggml.model"),
      { type: 8, value: "gpt2" },
      "the project's own byte-level BPE tokenizer",
    );
    assert.deepEqual(meta.get("general.architecture"), { type: 8, value: "llama" });
    assert.ok(statSync(own).size > 100_000);
    if (!vocabDir) return;
    const withVocab = join(dir, "deepseek.gguf");
    const out = await run(process.execPath, [
      cliPath,
      "make-model",
      "--out",
      withVocab,
      "--vocab",
      join(vocabDir, "ggml-vocab-deepseek-coder.gguf"),
    ]);
    assert.match(out.stdout, /vocabulary 32256/);
  });

  test("rejects an unknown size", async () => {
    const res = await run(process.execPath, [cliPath, "make-model", "--out", "/tmp/x.gguf", "--size", "huge"]).catch(
      (e: { code: number; stderr: string }) => e,
    );
    assert.notEqual((res as { code: number }).code, 0);
    assert.match((res as { stderr: string }).stderr, /huge/);
  });
});
