import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import Database from "better-sqlite3";
import OpenAI from "openai";
import { completionChunks } from "../helpers/fake-engine.js";
import { testModel } from "../helpers/models.js";
import { until } from "../helpers/until.js";
import { cliPath } from "../helpers/paths.js";
import { startServer, TEST_KEY, type RunningServer } from "../helpers/server.js";

/**
 * A gateway (`lucena serve --upstream …`) in front of three real Lucena workers, every one a real process on a
 * real socket. Workers are killed (SIGKILL) and restarted on their port; the gateway's logs, the workers' logs
 * and /v1/stats, the gateway's ledger and metrics tell what happened.
 */

const MODEL = "lucena-coder-latest";
const run = promisify(execFile);
const T = { timeout: 30_000 };
/** A stream long enough to act on while it runs (seconds of the tiny model), within the 8192-token context. */
const LONG = 6000;

type Entry = Record<string, unknown>;

/** The JSON log lines a server has written so far (from its `from`th line, counting every line it wrote). */
function entries(s: RunningServer, from = 0): Entry[] {
  const out: Entry[] = [];
  for (const line of s.logs.slice(from)) {
    if (!line.startsWith("{")) continue;
    try {
      out.push(JSON.parse(line) as Entry);
    } catch {
      /* not a log line */
    }
  }
  return out;
}

/**
 * The request lines a server logged for chat completions it answered (200) at `since` or later (its log time:
 * a line may reach this process after the client has its answer, so counting lines that arrived would be racy).
 * With `tokens`, only answers that ran to that max_tokens: each test asks for its own length, so a straggling
 * line of another test's request is never counted.
 */
const completionLines = (s: RunningServer, since: number, tokens?: number) =>
  entries(s).filter(
    (e) =>
      e.msg === "request" &&
      e.path === "/v1/chat/completions" &&
      e.status === 200 &&
      Date.parse(e.time as string) >= since &&
      (tokens === undefined || (e.finish === "length" && e.completionTokens === tokens)),
  );
const requestLine = (s: RunningServer, reqId: string) =>
  entries(s).find((e) => e.msg === "request" && e.reqId === reqId);

/** Polls `fn` until it gives something other than undefined/null/false, or fails after `ms`. */

const alive = (s: RunningServer) => s.proc.exitCode === null && s.proc.signalCode === null;
/** How the gateway names a replica given as a bare origin: its OpenAI base URL. */
const label = (s: RunningServer) => `http://127.0.0.1:${s.port}/v1`;
const auth = (key = TEST_KEY) => ({ authorization: `Bearer ${key}`, "content-type": "application/json" });

async function busy(s: RunningServer): Promise<number> {
  const body = (await fetch(`${s.url}/v1/stats`, { headers: auth() }).then((r) => r.json())) as {
    models: Record<string, { busy: number }>;
  };
  return body.models[MODEL].busy;
}

async function countTokens(s: RunningServer, body: Record<string, unknown>): Promise<number> {
  const res = await fetch(`${s.url}/v1/tokens/count`, { method: "POST", headers: auth(), body: JSON.stringify(body) });
  assert.equal(res.status, 200, `count on ${s.url}`);
  return ((await res.json()) as { usage: { prompt_tokens: number } }).usage.prompt_tokens;
}

/** Reads an SSE body one event (the text before its blank line) at a time. */
class SseReader {
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  private readonly decoder = new TextDecoder();
  private buffer = "";
  readonly events: string[] = [];

  constructor(res: Response) {
    this.reader = res.body!.getReader();
  }

  /** The next event, or null at the end of the body (which must not cut an event in half). */
  async next(): Promise<string | null> {
    for (;;) {
      const i = this.buffer.indexOf("\n\n");
      if (i >= 0) {
        const event = this.buffer.slice(0, i);
        this.buffer = this.buffer.slice(i + 2);
        this.events.push(event);
        return event;
      }
      const { value, done } = await this.reader.read();
      if (done) {
        assert.equal(this.buffer, "", "the stream ends with a complete event");
        return null;
      }
      this.buffer += this.decoder.decode(value, { stream: true });
    }
  }

  /** Reads until the first content chunk. */
  async firstContent(): Promise<string> {
    for (;;) {
      const e = await this.next();
      assert.ok(e !== null, "the stream is still going");
      if (e.startsWith("data: {") && e.includes('"content"')) return e;
    }
  }

  async rest(): Promise<string[]> {
    while ((await this.next()) !== null);
    return this.events;
  }
}

describe("a gateway serving its model from three Lucena workers (--upstream)", () => {
  const model = testModel({ size: "tiny" });
  /** The current process of each of the three workers (a restarted worker replaces its entry). */
  const workers: RunningServer[] = [];
  /** Every process this file started, stopped after it whatever happened. */
  const started: RunningServer[] = [];
  let gateway: RunningServer;
  let client: OpenAI;

  // Workers run their engine on one thread: three of them share the machine's cores with the gateway and the test.
  const startWorker = async (opts: Parameters<typeof startServer>[0] = {}) => {
    const s = await startServer({ model, config: { models: [{ threads: 1 }] }, ...opts });
    started.push(s);
    return s;
  };

  /** A stream through the gateway, as raw SSE. */
  const gatewayStream = (body: Record<string, unknown>, reqId: string, signal?: AbortSignal) =>
    fetch(`${gateway.url}/v1/chat/completions`, {
      method: "POST",
      headers: { ...auth(), "x-request-id": reqId },
      body: JSON.stringify({
        model: MODEL,
        stream: true,
        messages: [{ role: "user", content: "Go on forever." }],
        ...body,
      }),
      signal,
    });

  /** The one live worker generating now (only one request is in flight when this is called). */
  const servingWorker = () =>
    until("exactly one worker to be generating", async () => {
      const live = workers.filter(alive);
      const counts = await Promise.all(live.map(busy));
      const sum = counts.reduce((a, b) => a + b, 0);
      return sum === 1 ? live[counts.indexOf(1)] : undefined;
    });

  const gatewayLog = (msg: string, replica: string, from = 0) =>
    entries(gateway, from).find((e) => e.msg === msg && e.replica === replica);

  before(async () => {
    workers.push(...(await Promise.all([0, 1, 2].map(() => startWorker()))));
    gateway = await startServer({
      args: ["--upstream", workers.map((w) => w.url).join(",")],
      env: { LUCENA_UPSTREAM_KEY: TEST_KEY },
      config: { models: [{ upstream: { health_interval_seconds: 0.2, probes_to_readmit: 1 } }] },
    });
    started.push(gateway);
    client = new OpenAI({ apiKey: TEST_KEY, baseURL: `${gateway.url}/v1`, maxRetries: 0 });
  });

  after(async () => {
    const codes = await Promise.all(started.map(async (s) => [s, alive(s), await s.stop()] as const));
    // Every process still running at the end exits cleanly on SIGTERM; those killed earlier are already gone.
    for (const [s, wasAlive, code] of codes) if (wasAlive) assert.equal(code, 0, `${s.url} exits 0 on SIGTERM`);
  });

  test(
    "openai SDK through the gateway: JSON and stream with usage; counts agree with the workers'; the SSE is Lucena's",
    T,
    async () => {
      const ready = entries(gateway).find((e) => e.msg === "upstream model ready")!;
      assert.deepEqual(ready.healthy, workers.map(label), "all three replicas pass their first probe");

      const messages = [{ role: "user" as const, content: "Write a binary search in Python." }];
      const json = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 12 });
      assert.equal(json.object, "chat.completion");
      assert.match(json.id, /^chatcmpl-/);
      assert.equal(json.model, MODEL);
      assert.equal(json.choices[0].message.role, "assistant");
      assert.ok((json.choices[0].message.content ?? "").length > 0);
      assert.equal(json.choices[0].finish_reason, "length");
      assert.equal(json.usage?.completion_tokens, 12);
      assert.equal(json.usage?.total_tokens, json.usage.prompt_tokens + 12);

      const stream = await client.chat.completions.create({
        model: MODEL,
        messages,
        max_tokens: 20,
        stream: true,
        stream_options: { include_usage: true },
      });
      let text = "";
      let usage: OpenAI.CompletionUsage | undefined;
      let finish: string | null = null;
      for await (const chunk of stream) {
        text += chunk.choices[0]?.delta?.content || "";
        if (chunk.choices.length === 0) usage = chunk.usage ?? undefined;
        finish = chunk.choices[0]?.finish_reason ?? finish;
      }
      assert.ok(text.length > 0);
      assert.equal(finish, "length");
      assert.deepEqual(usage, {
        prompt_tokens: json.usage.prompt_tokens,
        completion_tokens: 20,
        total_tokens: json.usage.prompt_tokens + 20,
      });

      // The gateway counts with the workers' /v1/tokens/count: the same number as the usage, and as each worker says.
      const body = { model: MODEL, messages, max_tokens: 12 };
      const viaGateway = await countTokens(gateway, body);
      const direct = await Promise.all(workers.map((w) => countTokens(w, body)));
      assert.equal(viaGateway, json.usage.prompt_tokens);
      assert.deepEqual(direct, [viaGateway, viaGateway, viaGateway]);

      // The text is the worker's own: a greedy answer through the gateway equals one asked of a worker directly.
      const greedy = { model: MODEL, messages, max_tokens: 24, temperature: 0 };
      const direct0 = new OpenAI({ apiKey: TEST_KEY, baseURL: `${workers[0].url}/v1`, maxRetries: 0 });
      const [a, b] = await Promise.all([
        client.chat.completions.create(greedy),
        direct0.chat.completions.create(greedy),
      ]);
      assert.equal(a.choices[0].message.content, b.choices[0].message.content);

      // Raw bytes: `: connected`, role, content…, usage with empty choices, finish, [DONE], each a complete event.
      const res = await gatewayStream(
        { max_tokens: 8, messages: [{ role: "user", content: "hi" }] },
        "upstream-raw-sse",
      );
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type") ?? "", /^text\/event-stream/);
      assert.equal(res.headers.get("x-request-id"), "upstream-raw-sse");
      const chunks = completionChunks(await new SseReader(res).rest());
      const role = chunks[0];
      assert.match(role.id, /^chatcmpl-/);
      assert.deepEqual(role.choices, [{ index: 0, delta: { role: "assistant" }, finish_reason: null }]);
      assert.deepEqual(chunks.at(-1)!.choices, [{ index: 0, delta: {}, finish_reason: "length" }]);
      const usageChunk = chunks.at(-2)!;
      assert.deepEqual(usageChunk.choices, []);
      const promptHi = await countTokens(workers[1], { model: MODEL, messages: [{ role: "user", content: "hi" }] });
      assert.deepEqual(usageChunk.usage, { prompt_tokens: promptHi, completion_tokens: 8, total_tokens: promptHi + 8 });
      const content = chunks.slice(1, -2);
      assert.ok(content.length > 0);
      for (const c of content) {
        assert.equal(c.choices.length, 1);
        assert.ok(
          typeof c.choices[0].delta.content === "string" && c.choices[0].delta.content.length > 0,
          "content chunks are never empty",
        );
        assert.deepEqual(Object.keys(c.choices[0].delta), ["content"]);
        assert.equal(c.choices[0].finish_reason, null);
      }
      for (const c of chunks) {
        assert.equal(c.id, role.id, "one id for the whole stream");
        assert.equal(c.object, "chat.completion.chunk");
        assert.equal(c.created, role.created);
        assert.equal(c.model, MODEL);
      }
    },
  );

  test("tools through the gateway: the workers' calls come back in the gateway's own frames", T, async () => {
    const tools = [
      {
        type: "function" as const,
        function: {
          name: "lookup",
          parameters: {
            type: "object",
            properties: { q: { type: "string", maxLength: 8 }, n: { type: "integer", minimum: 1, maximum: 3 } },
            required: ["q", "n"],
          },
        },
      },
    ];
    const body = {
      model: MODEL,
      messages: [{ role: "user" as const, content: "Look up cats." }],
      tools,
      tool_choice: "required" as const,
      max_tokens: 200,
    };
    const json = await client.chat.completions.create(body);
    const choice = json.choices[0];
    assert.equal(choice.finish_reason, "tool_calls");
    const call = choice.message.tool_calls?.[0];
    assert.ok(call?.type === "function");
    assert.equal(call.function.name, "lookup");
    const args = JSON.parse(call.function.arguments) as { q: unknown; n: unknown };
    assert.equal(typeof args.q, "string");
    assert.ok([1, 2, 3].includes(args.n as number));
    const streamed = await client.chat.completions.stream(body).finalChatCompletion();
    assert.equal(streamed.choices[0].finish_reason, "tool_calls");
    const s = streamed.choices[0].message.tool_calls?.[0];
    assert.ok(s?.type === "function" && s.function.name === "lookup");
    assert.doesNotThrow(() => JSON.parse(s.function.arguments));
    // The count goes to a worker with the tools, as the completion does.
    assert.equal(await countTokens(gateway, body), json.usage?.prompt_tokens);
  });

  test(
    "the Responses API and legacy completions through the gateway: the workers answer, usage agrees",
    T,
    async () => {
      const res = await client.responses.create({
        model: MODEL,
        input: "Say hi.",
        max_output_tokens: 5,
        temperature: 0,
      });
      assert.equal(res.status, "incomplete");
      assert.equal(res.usage?.output_tokens, 5);
      assert.equal(
        res.usage?.input_tokens,
        await countTokens(gateway, { model: MODEL, messages: [{ role: "user", content: "Say hi." }] }),
      );
      // A raw prompt goes to a worker's /v1/completions as it is, and its count is the worker's.
      const text = await client.completions.create({
        model: MODEL,
        prompt: "def f(x):",
        max_tokens: 6,
        temperature: 0,
      });
      const direct = await new OpenAI({
        apiKey: TEST_KEY,
        baseURL: `${workers[0].url}/v1`,
        maxRetries: 0,
      }).completions.create({ model: MODEL, prompt: "def f(x):", max_tokens: 6, temperature: 0 });
      assert.equal(text.object, "text_completion");
      assert.deepEqual(text.usage, direct.usage);
      assert.equal(text.choices[0]?.text, direct.choices[0]?.text, "greedy: the same text as from a worker itself");
      // Fill-in-the-middle is not passed on: servers differ in how they do it.
      const fim = await fetch(`${gateway.url}/v1/completions`, {
        method: "POST",
        headers: auth(),
        body: JSON.stringify({ model: MODEL, prompt: "a", suffix: "b" }),
      });
      assert.equal(fim.status, 400);
      assert.equal(((await fim.json()) as { error: { param: string } }).error.param, "suffix");
    },
  );

  test("30 concurrent requests are spread over all three workers", T, async (t) => {
    const since = Date.now();
    const answers = await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        client.chat.completions.create({
          model: MODEL,
          max_tokens: 64,
          messages: [{ role: "user", content: `request ${i}` }],
        }),
      ),
    );
    assert.ok(answers.every((r) => r.usage?.completion_tokens === 64 && r.choices[0].finish_reason === "length"));
    const got = await until("the workers to log 30 completions", () => {
      const d = workers.map((w) => completionLines(w, since, 64).length);
      return d.reduce((a, b) => a + b, 0) >= 30 ? d : undefined;
    });
    assert.equal(
      got.reduce((a, b) => a + b, 0),
      30,
      `exactly 30 completions reached the workers: ${got}`,
    );
    t.diagnostic(`completions per worker: ${got.join(", ")}`);
    for (const n of got) assert.ok(n >= 5, `each worker takes a fair share: ${got}`);
  });

  test(
    "a client that disconnects mid-stream aborts the upstream request: the worker frees its sequence and logs it cancelled",
    T,
    async () => {
      const ac = new AbortController();
      const since = Date.now();
      const res = await gatewayStream({ max_tokens: LONG }, "upstream-disconnect-1", ac.signal);
      assert.equal(res.status, 200);
      await new SseReader(res).firstContent();
      const worker = await servingWorker();
      ac.abort();
      // Waits are generous (a busy machine is slow); what shows the abort reached the worker is that its
      // generation ended cancelled, short of the long answer.
      await until("the worker's sequence to be free", async () => (await busy(worker)) === 0);
      const line = await until("the worker's log line for the cancelled request", () =>
        completionLines(worker, since).find((e) => e.finish === "cancelled"),
      );
      assert.equal(line.aborted, true);
      assert.equal(line.stream, true);
      assert.ok((line.completionTokens as number) < LONG, `stopped early: ${line.completionTokens} tokens`);
      const gw = await until("the gateway's log line", () => requestLine(gateway, "upstream-disconnect-1"));
      assert.equal(gw.finish, "cancelled");
      assert.equal(gw.aborted, true);
      for (const w of workers) assert.equal(await busy(w), 0, `${w.url} has no sequence busy`);
    },
  );

  test(
    "a key's rpm limit holds at the gateway (429) and its ledger rows hold what the client was told",
    T,
    async () => {
      const { stdout } = await run(process.execPath, [
        cliPath,
        "keys",
        "create",
        "--json",
        "--name",
        "upstream-rpm",
        "--rpm",
        "3",
        "--data-dir",
        gateway.dataDir,
      ]);
      const { id, key } = JSON.parse(stdout) as { id: string; key: string };
      const keyed = new OpenAI({ apiKey: key, baseURL: `${gateway.url}/v1`, maxRetries: 0 });
      const received: Array<{ prompt: number; completion: number; stream: number }> = [];

      const one = await keyed.chat.completions.create({
        model: MODEL,
        max_tokens: 5,
        messages: [{ role: "user", content: "one" }],
      });
      received.push({ prompt: one.usage!.prompt_tokens, completion: one.usage!.completion_tokens, stream: 0 });
      const two = await keyed.chat.completions.create({
        model: MODEL,
        max_tokens: 7,
        stream: true,
        stream_options: { include_usage: true },
        messages: [{ role: "user", content: "two, a longer one" }],
      });
      for await (const chunk of two)
        if (chunk.usage)
          received.push({ prompt: chunk.usage.prompt_tokens, completion: chunk.usage.completion_tokens, stream: 1 });
      const three = await keyed.chat.completions.create({
        model: MODEL,
        max_tokens: 9,
        messages: [
          { role: "system", content: "Be brief." },
          { role: "user", content: "three" },
        ],
      });
      received.push({ prompt: three.usage!.prompt_tokens, completion: three.usage!.completion_tokens, stream: 0 });
      assert.deepEqual(
        received.map((r) => r.completion),
        [5, 7, 9],
      );
      assert.equal(new Set(received.map((r) => r.prompt)).size, 3, "three different prompts");

      const refused = await fetch(`${gateway.url}/v1/chat/completions`, {
        method: "POST",
        headers: auth(key),
        body: JSON.stringify({ model: MODEL, max_tokens: 2, messages: [{ role: "user", content: "four" }] }),
      });
      assert.equal(refused.status, 429);
      assert.equal(((await refused.json()) as { error: { type: string } }).error.type, "rate_limit_error");
      assert.ok(Number(refused.headers.get("retry-after")) >= 1);
      assert.equal(refused.headers.get("x-ratelimit-limit-requests"), "3");
      assert.equal(refused.headers.get("x-ratelimit-remaining-requests"), "0");

      const rows = await until("three ledger rows", () => {
        const db = new Database(join(gateway.dataDir, "lucena.db"), { readonly: true });
        try {
          const r = db.prepare("SELECT * FROM usage WHERE key_id = ? ORDER BY id").all(id) as Entry[];
          return r.length >= 3 ? r : undefined;
        } finally {
          db.close();
        }
      });
      assert.equal(rows.length, 3, "the refused request is not in the ledger");
      assert.deepEqual(
        rows.map((r) => ({ prompt: r.prompt_tokens, completion: r.completion_tokens, stream: r.stream })),
        received,
      );
      assert.deepEqual(
        rows.map((r) => [r.model, r.status, r.finish_reason]),
        [
          [MODEL, 200, "length"],
          [MODEL, 200, "length"],
          [MODEL, 200, "length"],
        ],
      );
    },
  );

  test("a worker killed while idle is ejected, and 20 requests after it all succeed on the others", T, async (t) => {
    const victim = workers[0];
    assert.ok(alive(victim));
    const others = workers.filter((w) => w !== victim && alive(w));
    const since = Date.now();
    const from = gateway.logs.length;
    await victim.stop("SIGKILL");
    const ejected = await until("the gateway to eject the killed replica", () =>
      gatewayLog("replica ejected", label(victim), from),
    );
    assert.match(String(ejected.reason), /^health probe failed: (ECONNREFUSED|ECONNRESET)$|^connection error$/);
    for (let i = 0; i < 20; i++) {
      const r = await client.chat.completions.create({
        model: MODEL,
        max_tokens: 5,
        messages: [{ role: "user", content: `after the kill ${i}` }],
      });
      assert.equal(r.usage?.completion_tokens, 5);
    }
    const got = await until("the survivors to log 20 completions", () => {
      const d = others.map((w) => completionLines(w, since, 5).length);
      return d.reduce((a, b) => a + b, 0) >= 20 ? d : undefined;
    });
    t.diagnostic(`completions per surviving worker: ${got.join(", ")}`);
    assert.equal(
      got.reduce((a, b) => a + b, 0),
      20,
    );
    assert.equal(
      entries(gateway, from).filter((e) => e.msg === "replica ejected" && e.replica === label(victim)).length,
      1,
      "ejected once",
    );
  });

  test("sequential requests take turns between two healthy replicas", T, async (t) => {
    const healthy = workers.filter(alive);
    if (healthy.length !== 2) return t.skip(`needs exactly two live workers, has ${healthy.length}`);
    const since = Date.now();
    // A client that checks its prompt's size before each completion, as budget-aware clients do.
    for (let i = 0; i < 10; i++) {
      const body = { model: MODEL, max_tokens: 3, messages: [{ role: "user" as const, content: `turn ${i}` }] };
      await countTokens(gateway, body);
      await client.chat.completions.create(body);
    }
    const got = await until("the workers to log 10 completions", () => {
      const d = healthy.map((w) => completionLines(w, since, 3).length);
      return d.reduce((a, b) => a + b, 0) >= 10 ? d : undefined;
    });
    t.diagnostic(`completions per live worker: ${got.join(", ")}`);
    for (const n of got) assert.ok(n >= 3, `both replicas take turns: ${got}`);
  });

  test(
    "a worker killed mid-stream ends the client's stream with an error event and [DONE]; new requests succeed on the others",
    T,
    async () => {
      const res = await gatewayStream({ max_tokens: LONG }, "upstream-midstream-kill");
      assert.equal(res.status, 200);
      const sse = new SseReader(res);
      await sse.firstContent();
      const victim = await servingWorker();
      await victim.stop("SIGKILL");
      const events = await sse.rest();
      assert.equal(events[0], ": connected");
      assert.equal(events.at(-1), "data: [DONE]", "the stream still ends with [DONE]");
      const last = events.at(-2)!;
      assert.ok(last.startsWith("data: {"), `an error event before [DONE]: ${last}`);
      assert.deepEqual(JSON.parse(last.slice(6)), {
        error: {
          message: "The model's server failed while answering; the answer is incomplete.",
          type: "server_error",
          code: 500,
        },
      });
      const chunks = events
        .slice(1, -2)
        .map(
          (e) =>
            JSON.parse(e.slice(6)) as { choices: Array<{ delta: { content?: string }; finish_reason: string | null }> },
        );
      assert.ok(
        chunks.some((c) => c.choices[0]?.delta.content),
        "text went out before the kill",
      );
      assert.ok(
        chunks.every((c) => c.choices.length === 1 && c.choices[0].finish_reason === null),
        "no usage or finish chunk: the answer is incomplete",
      );
      const gw = await until("the gateway's log line", () => requestLine(gateway, "upstream-midstream-kill"));
      assert.equal(gw.finish, "error");

      const survivors = workers.filter(alive);
      assert.ok(survivors.length >= 1);
      const since = Date.now();
      const answers = await Promise.all(
        Array.from({ length: 6 }, (_, i) =>
          client.chat.completions.create({
            model: MODEL,
            max_tokens: 6,
            messages: [{ role: "user", content: `after ${i}` }],
          }),
        ),
      );
      assert.ok(answers.every((r) => r.usage?.completion_tokens === 6));
      await until(
        "the survivors to log the 6 completions",
        () => survivors.reduce((n, w) => n + completionLines(w, since, 6).length, 0) >= 6,
      );
    },
  );

  test("per-replica metrics on the ops listener: healthy, in flight, requests", T, async () => {
    assert.ok(gateway.opsUrl, "the gateway has an ops listener");
    const scrape = async () => {
      const text = await fetch(`${gateway.opsUrl}/metrics`).then((r) => r.text());
      const series = new Map<string, number>();
      for (const line of text.split("\n")) {
        const m = /^(lucena_upstream_[a-z_]+)\{([^}]*)\} (\S+)$/.exec(line);
        if (!m) continue;
        const labels = Object.fromEntries([...m[2].matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
        if (labels.model !== MODEL) continue;
        series.set(`${m[1]} ${labels.replica}`, Number(m[3]));
      }
      return series;
    };
    const value = (s: Map<string, number>, name: string, w: RunningServer) => s.get(`${name} ${label(w)}`);

    const first = await scrape();
    for (const w of workers) {
      for (const name of [
        "lucena_upstream_replica_healthy",
        "lucena_upstream_requests_in_flight",
        "lucena_upstream_requests_total",
      ]) {
        assert.ok(value(first, name, w) !== undefined, `${name}{model="${MODEL}",replica="${label(w)}"} is exported`);
      }
    }
    // healthy follows the workers' lives (killed workers are ejected by the probes within a few intervals).
    await until("healthy to be 1 for live workers and 0 for killed ones", async () => {
      const s = await scrape();
      return workers.every((w) => value(s, "lucena_upstream_replica_healthy", w) === (alive(w) ? 1 : 0));
    });
    assert.ok(workers.some(alive), "a live worker to serve");

    // in flight: one long stream shows on its replica only, and goes back to 0 when the client goes.
    const ac = new AbortController();
    const res = await gatewayStream({ max_tokens: LONG }, "upstream-metrics-inflight", ac.signal);
    await new SseReader(res).firstContent();
    const serving = await servingWorker();
    const during = await scrape();
    for (const w of workers)
      assert.equal(
        value(during, "lucena_upstream_requests_in_flight", w),
        w === serving ? 1 : 0,
        `in flight on ${label(w)}`,
      );
    ac.abort();
    await until("in flight back to 0", async () => {
      const s = await scrape();
      return workers.every((w) => value(s, "lucena_upstream_requests_in_flight", w) === 0);
    });

    // requests_total: at least every completion a worker logged since the first scrape (counts go through it too).
    const since = Date.now();
    const totalsBefore = await scrape();
    for (let i = 0; i < 4; i++)
      await client.chat.completions.create({
        model: MODEL,
        max_tokens: 7,
        messages: [{ role: "user", content: `metrics ${i}` }],
      });
    await until(
      "the workers to log the 4 completions",
      () => workers.reduce((n, w) => n + (alive(w) ? completionLines(w, since, 7).length : 0), 0) >= 4,
    );
    const totalsAfter = await scrape();
    let sum = 0;
    for (const w of workers) {
      const d =
        value(totalsAfter, "lucena_upstream_requests_total", w)! -
        value(totalsBefore, "lucena_upstream_requests_total", w)!;
      const logged = alive(w) ? completionLines(w, since, 7).length : 0;
      assert.ok(d >= logged, `${label(w)}: requests_total rose by ${d}, the worker logged ${logged} completions`);
      if (!alive(w)) assert.equal(d, 0, "an ejected replica gets no requests");
      sum += d;
    }
    assert.ok(sum >= 4, `requests_total rose by ${sum}`);
  });

  test("killed workers restarted on their port are re-admitted and get requests again", T, async (t) => {
    if (workers.every(alive)) await workers[0].stop("SIGKILL"); // on its own, this test needs a dead worker too
    const dead = workers.map((w, i) => [w, i] as const).filter(([w]) => !alive(w));
    const from = gateway.logs.length;
    const restarted = await Promise.all(
      dead.map(async ([w, i]) => {
        const r = await startWorker({ dataDir: w.dataDir, args: ["--port", String(w.port)] });
        assert.equal(r.port, w.port, "the same port");
        workers[i] = r;
        return r;
      }),
    );
    const loadedAt = Date.now();
    for (const r of restarted) {
      await until(`the gateway to re-admit ${label(r)}`, () => gatewayLog("replica re-admitted", label(r), from));
      // A Lucena worker answers /v1/models (the default health path) while its model still loads, and its probes
      // may time out during the load: the gateway can re-admit it early and eject it once more. Wait until the
      // re-admission holds after the load (reported as a finding; not what this test is about).
      await until(`${label(r)} to stay admitted after its model loaded`, () => {
        const last = entries(gateway, from)
          .filter((e) => e.replica === label(r) && (e.msg === "replica ejected" || e.msg === "replica re-admitted"))
          .at(-1);
        return last?.msg === "replica re-admitted" && Date.now() - loadedAt >= 300;
      });
    }
    const since = Date.now();
    const answers = await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        client.chat.completions.create({
          model: MODEL,
          max_tokens: 65,
          messages: [{ role: "user", content: `again ${i}` }],
        }),
      ),
    );
    assert.ok(answers.every((r) => r.usage?.completion_tokens === 65));
    const got = await until("the workers to log 30 completions", () => {
      const d = workers.map((w) => completionLines(w, since, 65).length);
      return d.reduce((a, b) => a + b, 0) >= 30 ? d : undefined;
    });
    t.diagnostic(
      `completions per worker: ${got.join(", ")} (restarted: ${restarted.map((r) => workers.indexOf(r)).join(", ")})`,
    );
    for (const r of restarted) {
      const n = got[workers.indexOf(r)];
      assert.ok(n >= 5, `${label(r)} takes a fair share again: ${got}`);
    }
  });
});
