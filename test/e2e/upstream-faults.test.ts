import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { testModel } from "../helpers/models.js";
import { startServer, TEST_KEY, type RunningServer } from "../helpers/server.js";
import { until } from "../helpers/until.js";

/**
 * A gateway in front of real Lucena workers (`lucena serve` processes on real sockets): a worker frozen with
 * SIGSTOP (its kernel still accepts connections, nothing answers), and a worker that trims the conversation
 * the gateway sends it.
 */

const MODEL = "lucena-coder-latest";
const T = { timeout: 60_000 };
const auth = { authorization: `Bearer ${TEST_KEY}`, "content-type": "application/json" };
const started: RunningServer[] = [];
/** Workers stopped with SIGSTOP: continued before they are stopped for good. */
const frozen = new Set<RunningServer>();

after(async () => {
  for (const s of frozen) s.proc.kill("SIGCONT");
  await Promise.all(started.map((s) => s.stop("SIGKILL")));
});

async function start(opts: Parameters<typeof startServer>[0]): Promise<RunningServer> {
  const s = await startServer(opts);
  started.push(s);
  return s;
}

function entries(s: RunningServer): Array<Record<string, unknown>> {
  return s.logs
    .filter((l) => l.startsWith("{"))
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return {};
      }
    });
}

async function busy(s: RunningServer): Promise<number> {
  const body = (await fetch(`${s.url}/v1/stats`, { headers: auth }).then((r) => r.json())) as {
    models: Record<string, { busy: number }>;
  };
  return body.models[MODEL].busy;
}

const post = (s: RunningServer, path: string, body: unknown, signal?: AbortSignal) =>
  fetch(`${s.url}${path}`, {
    method: "POST",
    headers: auth,
    body: JSON.stringify({ model: MODEL, ...(body as object) }),
    signal,
  });

describe("a worker frozen with SIGSTOP behind a gateway", () => {
  test(
    "requests sent to it are answered by the other worker; a stream in progress on it ends with an error event after idle_timeout_seconds",
    T,
    async (t) => {
      const model = testModel({ size: "tiny" });
      // Workers run their engine on one thread: they share the machine's cores with the gateway and the test.
      const workers = await Promise.all([0, 1].map(() => start({ model, config: { models: [{ threads: 1 }] } })));
      const gateway = await start({
        args: ["--upstream", workers.map((w) => w.url).join(",")],
        env: { LUCENA_UPSTREAM_KEY: TEST_KEY },
        config: { models: [{ upstream: { health_interval_seconds: 0.5, idle_timeout_seconds: 2 } }] },
      });

      // A long stream on one worker, under way when that worker is frozen.
      const res = await post(gateway, "/v1/chat/completions", {
        stream: true,
        max_tokens: 6000,
        messages: [{ role: "user", content: "Go on." }],
      });
      const reader = res.body!.getReader();
      let sse = "";
      while (!sse.includes('"content"')) sse += new TextDecoder().decode((await reader.read()).value);
      const victim = await until("one worker to be generating", async () => {
        const counts = await Promise.all(workers.map(busy));
        return counts[0] + counts[1] === 1 ? workers[counts.indexOf(1)] : undefined;
      });
      const survivor = workers.find((w) => w !== victim)!;
      victim.proc.kill("SIGSTOP");
      frozen.add(victim);
      const frozenAt = Date.now();

      // Sent at once: the least busy replica takes turns, so some of them go to the frozen worker.
      const times: number[] = [];
      const answers = await Promise.all(
        Array.from({ length: 6 }, async (_, i) => {
          const r = await post(gateway, "/v1/chat/completions", {
            max_tokens: 5,
            messages: [{ role: "user", content: `frozen ${i}` }],
          });
          const body = (await r.json()) as { usage?: { completion_tokens: number } };
          times.push(Date.now() - frozenAt);
          return { status: r.status, completion: body.usage?.completion_tokens };
        }),
      );
      t.diagnostic(`answered after ${times.sort((a, b) => a - b).join(", ")} ms`);
      assert.deepEqual(
        answers,
        Array.from({ length: 6 }, () => ({ status: 200, completion: 5 })),
      );
      const gw = entries(gateway);
      const abandoned = gw.filter(
        (e) => e.msg === "upstream request failed before its first text" && e.replica === `${victim.url}/v1`,
      );
      assert.ok(abandoned.length >= 1, "some requests went to the frozen worker first");
      const served = await until("the survivor to log the 6 completions", () => {
        const n = entries(survivor).filter(
          (e) => e.msg === "request" && e.path === "/v1/chat/completions" && e.completionTokens === 5,
        ).length;
        return n >= 6 ? n : undefined;
      });
      assert.equal(served, 6);

      // The stream in progress: its text stopped at the freeze; the gateway cuts it after the idle bound.
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        sse += new TextDecoder().decode(value);
      }
      const events = sse.split("\n\n").filter(Boolean);
      assert.equal(events.at(-1), "data: [DONE]");
      assert.deepEqual(JSON.parse(events.at(-2)!.slice(6)), {
        error: {
          message: "The model's server failed while answering; the answer is incomplete.",
          type: "server_error",
          code: 500,
        },
      });
      const cut = entries(gateway).find((e) => e.msg === "upstream stream silent too long: cut");
      assert.ok(cut, "the gateway logs why it cut the stream");
      assert.equal(cut.replica, `${victim.url}/v1`);
    },
  );
});

describe("trimming through a gateway: _lucena.trimmed_messages is what the worker kept", () => {
  // 80 old messages of 1,000 characters each and a short question: the worker, whose prompt budget is 300
  // tokens, keeps only the question (and a system message, which is never dropped).
  const old = Array.from({ length: 80 }, (_, i) => ({
    role: i % 2 === 0 ? "user" : "assistant",
    content: `${i} ${"lorem ipsum dolor sit amet ".repeat(37)}`,
  }));
  const messages = [...old, { role: "user", content: "And now, in one word?" }];

  interface Count {
    usage: { prompt_tokens: number };
    _lucena: { trimmed_messages: number };
  }
  const count = async (s: RunningServer, body: Record<string, unknown>) => {
    const r = await post(s, "/v1/tokens/count", body);
    assert.equal(r.status, 200, `count on ${s.url}`);
    return (await r.json()) as Count;
  };

  test(
    "counts and completions through the gateway agree with the worker's own, with and without a system prompt",
    T,
    async () => {
      const worker = await start({
        model: testModel({ size: "tiny" }),
        config: { models: [{ max_input_tokens: 300, context_size: 2048, system_prompt: null, threads: 1 }] },
      });
      const upstream = { replicas: [{ url: worker.url, api_key: TEST_KEY }] };
      const plain = await start({ config: { models: [{ system_prompt: null, upstream }] } });

      for (const body of [
        { messages },
        { messages, max_tokens: 7 },
        { messages: [{ role: "system", content: "Be brief." }, ...messages] },
      ]) {
        const direct = await count(worker, body);
        const viaGateway = await count(plain, body);
        assert.equal(
          direct._lucena.trimmed_messages,
          body.messages.length - 80,
          "the worker keeps the question (and the system message)",
        );
        assert.deepEqual(
          { prompt: viaGateway.usage.prompt_tokens, kept: viaGateway._lucena.trimmed_messages },
          { prompt: direct.usage.prompt_tokens, kept: direct._lucena.trimmed_messages },
        );
      }

      // The gateway's own system prompt goes to the worker as a system message of the request it sends: of the
      // client's messages, only the question remains.
      const prompted = await start({ config: { models: [{ system_prompt: "Be brief.", upstream }] } });
      const withPrompt = await count(worker, {
        messages: [{ role: "system", content: "Be brief." }, ...messages],
        max_tokens: 7,
      });
      const viaPrompted = await count(prompted, { messages, max_tokens: 7 });
      assert.deepEqual(
        { prompt: viaPrompted.usage.prompt_tokens, kept: viaPrompted._lucena.trimmed_messages },
        { prompt: withPrompt.usage.prompt_tokens, kept: 1 },
      );

      // A completion evaluates what the count said: the same prompt tokens as the count for the same body.
      for (const [gateway, counted] of [
        [plain, await count(plain, { messages, max_tokens: 7 })],
        [prompted, viaPrompted],
      ] as const) {
        const r = await post(gateway, "/v1/chat/completions", { messages, max_tokens: 7 });
        assert.equal(r.status, 200);
        const usage = ((await r.json()) as { usage: { prompt_tokens: number } }).usage;
        assert.equal(usage.prompt_tokens, counted.usage.prompt_tokens);
      }
    },
  );
});
