import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { testModel } from "../helpers/models.js";
import { startServer, type RunningServer } from "../helpers/server.js";

const MODEL = "lucena-coder-latest";

interface ModelStats {
  busy: number;
  waiting: number;
  sequences: number;
  prompt_tokens_evaluated: number;
  prompt_tokens_reused: number;
  scheduler: {
    steps: number;
    tpot_target_ms: number;
    prompt_token_ms: number | null;
    decode_step_ms: number | null;
    prompt_budget: number | null;
  };
}

describe("serving many clients on one embedded model", () => {
  let server: RunningServer;
  const headers = () => ({ authorization: `Bearer ${server.key}`, "content-type": "application/json" });
  const stats = async () =>
    (
      (await fetch(`${server.url}/v1/stats`, { headers: headers() }).then((r) => r.json())) as {
        models: Record<string, ModelStats>;
      }
    ).models[MODEL];

  /** Streams a completion, timestamping each content chunk. */
  async function timedStream(
    body: Record<string, unknown>,
    onToken?: (count: number) => void,
  ): Promise<{ times: number[]; usage: { prompt_tokens: number } }> {
    const res = await fetch(`${server.url}/v1/chat/completions`, {
      method: "POST",
      headers: headers(),
      body: JSON.stringify({ model: MODEL, stream: true, ...body }),
    });
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    const times: number[] = [];
    let buffer = "";
    let usage = { prompt_tokens: -1 };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const events = buffer.split("\n\n");
      buffer = events.pop() ?? "";
      for (const e of events) {
        if (!e.startsWith("data: {")) continue;
        const chunk = JSON.parse(e.slice(6)) as {
          choices: Array<{ delta: { content?: string } }>;
          usage?: typeof usage;
        };
        if (chunk.choices[0]?.delta.content) {
          times.push(performance.now());
          onToken?.(times.length);
        }
        if (chunk.usage) usage = chunk.usage;
      }
    }
    return { times, usage };
  }

  before(async () => {
    server = await startServer({ model: testModel(), config: { models: [{ parallel: 4, queue_size: 64 }] } });
  });
  after(async () => {
    assert.equal(await server.stop(), 0);
  });

  test("two concurrent streams interleave: both produce tokens before either ends", async () => {
    const body = { max_tokens: 400, messages: [{ role: "user", content: "Tell me a long story." }] };
    const [a, b] = await Promise.all([
      timedStream(body),
      timedStream({ ...body, messages: [{ role: "user", content: "Another one." }] }),
    ]);
    assert.ok(a.times.length > 10 && b.times.length > 10);
    assert.ok(
      a.times[0] < b.times.at(-1)! && b.times[0] < a.times.at(-1)!,
      "each stream started before the other ended",
    );
    const bDuringA = b.times.filter((t) => t > a.times[0] && t < a.times.at(-1)!).length;
    assert.ok(bDuringA > 0, "tokens of both streams alternate, they are not served one after the other");
  });

  test("a request arriving while another streams gets its first token within the steps its prompt needs at the measured prompt speed", async () => {
    // B is sent once A's third token has come.
    let streaming!: () => void;
    const aStreams = new Promise<void>((resolve) => (streaming = resolve));
    const a = timedStream(
      { max_tokens: 4000, messages: [{ role: "user", content: "Tell me a very long story." }] },
      (n) => n === 3 && streaming(),
    );
    await aStreams;
    const content = `A question about this text. ${"Sailing ships crossed the wide grey sea before the storm came in. ".repeat(70)}`;
    // What reaching the scheduler costs B (parsing, tokenizing), in A's tokens: a count of the same messages.
    const counting = performance.now();
    const count = await fetch(`${server.url}/v1/tokens/count`, {
      method: "POST",
      headers: headers(),
      body: JSON.stringify({ model: MODEL, messages: [{ role: "user", content }] }),
    });
    assert.equal(count.status, 200);
    const counted = performance.now();
    const sent = performance.now();
    const b = await timedStream({ max_tokens: 3, messages: [{ role: "user", content }] });
    const aDone = await a;
    assert.ok(
      aDone.times[0] < sent && aDone.times.at(-1)! > b.times[0],
      `A streamed before B was sent and after B first token: A ${aDone.times.length} tokens ${aDone.times[0] - sent} to ${aDone.times.at(-1)! - sent} ms, B first ${b.times[0] - sent} ms`,
    );
    const s = (await stats()).scheduler;
    assert.ok(s.prompt_token_ms !== null && s.prompt_token_ms > 0, `measured ${s.prompt_token_ms} ms a prompt token`);
    assert.ok(b.usage.prompt_tokens > 1000, `a long prompt: ${b.usage.prompt_tokens} tokens`);
    // Beside a stream, a step holds the prompt tokens that the measured prompt speed fits in the target step time,
    // at least 32 (the floor) and at most 256 (batch_size). A gets one token a step, so B's first token comes within
    // its prompt's length over the floor of A's tokens, however slow the machine is (a fixed 16-token chunk, as
    // before, would take 160 steps); the time to reach the scheduler is allowed for twice over.
    const steps = Math.ceil((b.usage.prompt_tokens - 1) / 32);
    const aMeanwhile = aDone.times.filter((t) => t > sent && t < b.times[0]).length;
    const aWhileCounting = aDone.times.filter((t) => t > counting && t < counted).length;
    assert.ok(
      aMeanwhile <= steps + 2 * aWhileCounting + 4,
      `${aMeanwhile} of A's tokens before B's first (${b.usage.prompt_tokens} prompt tokens, at most ${steps} steps; ${aWhileCounting} while counting)`,
    );
    assert.ok(
      s.prompt_budget !== null && s.prompt_budget >= 32 && s.prompt_budget <= 256,
      `prompt tokens beside A: ${s.prompt_budget}`,
    );
  });

  test("a follow-up turn reuses the evaluated prefix: fewer prompt tokens are evaluated than cold", async () => {
    const opening = `Here is a document to discuss. ${"The quick brown fox jumps over the lazy dog while the cat watches. ".repeat(60)}`;
    const first = [{ role: "user", content: opening }];
    const s0 = await stats();
    const cold = await timedStream({ max_tokens: 8, messages: first });
    const s1 = await stats();
    const coldEvaluated = s1.prompt_tokens_evaluated - s0.prompt_tokens_evaluated;
    const coldReused = s1.prompt_tokens_reused - s0.prompt_tokens_reused;
    assert.equal(coldEvaluated + coldReused, cold.usage.prompt_tokens);
    // Only the common start (the default system prompt, left in a sequence by earlier requests) is reused.
    assert.ok(coldReused < 150, `cold: ${coldReused} tokens reused`);

    const followUp = [...first, { role: "assistant", content: "Noted." }, { role: "user", content: "Summarise it." }];
    const warm = await timedStream({ max_tokens: 8, messages: followUp });
    const s2 = await stats();
    const warmEvaluated = s2.prompt_tokens_evaluated - s1.prompt_tokens_evaluated;
    const reused = s2.prompt_tokens_reused - s1.prompt_tokens_reused;
    assert.ok(cold.usage.prompt_tokens > 500, `a long prompt: ${cold.usage.prompt_tokens} tokens`);
    assert.ok(reused >= cold.usage.prompt_tokens - 5, `the first turn's prompt is reused (${reused} tokens)`);
    assert.equal(warmEvaluated + reused, warm.usage.prompt_tokens);
    assert.ok(
      warmEvaluated < coldEvaluated / 10,
      `second turn evaluates ${warmEvaluated} tokens, cold ${coldEvaluated}`,
    );
  });

  test("the API answers while every sequence is busy", async () => {
    const long = Array.from({ length: 4 }, () =>
      timedStream({ max_tokens: 3000, messages: [{ role: "user", content: "go" }] }),
    );
    for (let i = 0; i < 50 && (await stats()).busy < 4; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal((await stats()).busy, 4, "all four sequences are generating");
    const models = await fetch(`${server.url}/v1/models`, { headers: headers() });
    assert.equal(models.status, 200);
    const count = await fetch(`${server.url}/v1/tokens/count`, {
      method: "POST",
      headers: headers(),
      body: JSON.stringify({ model: MODEL, messages: [{ role: "user", content: "hi" }] }),
    });
    assert.equal(count.status, 200, "counting needs no sequence");
    await Promise.all(long);
  });

  test("1,000 mid-stream disconnects leave no sequence busy, and the server still answers", async () => {
    let cut = 0;
    const one = async () => {
      const ac = new AbortController();
      const res = await fetch(`${server.url}/v1/chat/completions`, {
        method: "POST",
        headers: headers(),
        body: JSON.stringify({
          model: MODEL,
          stream: true,
          max_tokens: 5000,
          messages: [{ role: "user", content: "go" }],
        }),
        signal: ac.signal,
      });
      const reader = res.body!.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        assert.ok(!done, "cut before the end");
        if (new TextDecoder().decode(value).includes('"content"')) break;
      }
      ac.abort();
      cut++;
    };
    const workers = Array.from({ length: 8 }, async () => {
      while (cut < 1000) await one();
    });
    await Promise.all(workers);
    assert.ok(cut >= 1000);
    let s = await stats();
    for (let i = 0; i < 100 && (s.busy > 0 || s.waiting > 0); i++) {
      await new Promise((r) => setTimeout(r, 20));
      s = await stats();
    }
    assert.deepEqual([s.busy, s.waiting], [0, 0], "every sequence is free again");
    const ok = await fetch(`${server.url}/v1/chat/completions`, {
      method: "POST",
      headers: headers(),
      body: JSON.stringify({ model: MODEL, max_tokens: 3, messages: [{ role: "user", content: "x" }] }),
    });
    assert.equal(ok.status, 200);
    assert.equal(((await ok.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens, 3);
  });
});
