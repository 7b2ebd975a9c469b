import assert from "node:assert/strict";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import type { ChatMessage } from "../../src/api/chat-request.js";
import { GgufCounter } from "../../src/engines/llama/gguf-counter.js";
import { promptBound } from "../../src/engines/upstream/counter.js";
import { createLogger } from "../../src/observability/log.js";
import { testModel } from "../helpers/models.js";
import { NO_SHARED, vocabDir } from "../helpers/paths.js";

/** Texts that are hard on a bytes-based bound: single characters, spaces, digits, CJK, emoji, code. */
const TEXTS = [
  "a",
  " ",
  "a a a a a a a a a a a a",
  "          ",
  "1 2 3 4 5 6 7 8 9 0 12345678901234567890",
  "世界你好，今天天气很好。",
  "🙂🙂🙂 🚀 👩‍💻",
  "naïve café — déjà vu",
  "\n\n\n\t\t",
  "function f(x) { return x.map((y) => y * 2).filter(Boolean); }",
  "<|im_start|> <s> </s> [INST]",
  "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(40),
];

function conversations(): ChatMessage[][] {
  const out: ChatMessage[][] = [];
  for (const t of TEXTS) {
    out.push([{ role: "user", content: t }]);
    out.push([
      { role: "system", content: t },
      { role: "user", content: t },
      { role: "assistant", content: t },
      { role: "user", content: t },
    ]);
  }
  out.push([{ role: "user", content: "" }]);
  out.push(Array.from({ length: 40 }, (_, i): ChatMessage => ({ role: i % 2 ? "assistant" : "user", content: "x" })));
  return out;
}

const log = createLogger("silent");
const counters: GgufCounter[] = [];
after(async () => {
  for (const c of counters) await c.close();
});

async function assertBoundHolds(path: string): Promise<void> {
  const counter = new GgufCounter(path);
  counters.push(counter);
  await counter.load(log);
  let tightest = Infinity;
  for (const messages of conversations()) {
    const exact = await counter.count(messages);
    const bound = promptBound(messages);
    assert.ok(exact > 0);
    assert.ok(bound >= exact, `bound ${bound} < count ${exact} for ${JSON.stringify(messages).slice(0, 120)}`);
    tightest = Math.min(tightest, bound - exact);
  }
  assert.ok(tightest >= 0);
}

describe("promptBound: never below a real tokenizer's count of the templated conversation", () => {
  test("the project's own byte-level BPE tokenizer with its ChatML template", async () => {
    await assertBoundHolds(testModel({ size: "tiny" }));
  });

  test(
    "phi-3's SentencePiece vocabulary file (vocabulary only) with its template",
    { skip: vocabDir ? false : NO_SHARED },
    async () => {
      await assertBoundHolds(join(vocabDir!, "ggml-vocab-phi-3.gguf"));
    },
  );

  test(
    "deepseek-coder's byte-level BPE vocabulary file (vocabulary only)",
    { skip: vocabDir ? false : NO_SHARED },
    async () => {
      await assertBoundHolds(join(vocabDir!, "ggml-vocab-deepseek-coder.gguf"));
    },
  );

  test("it grows with the text and with each message", () => {
    const one = promptBound([{ role: "user", content: "hello" }]);
    assert.ok(promptBound([{ role: "user", content: "hello world" }]) > one);
    assert.ok(
      promptBound([
        { role: "user", content: "hello" },
        { role: "user", content: "" },
      ]) > one,
    );
    assert.equal(
      promptBound([{ role: "user", content: "é" }]) - promptBound([{ role: "user", content: "" }]),
      2,
      "UTF-8 bytes",
    );
  });
});
