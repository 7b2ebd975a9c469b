import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { getLlama, resolveChatWrapper, type ChatHistoryItem, type Llama, type LlamaModel } from "node-llama-cpp";
import type { ChatMessage } from "../../src/api/chat-request.js";
import { CHUNK_CHARS, PromptTokenizer } from "../../src/engines/llama/prompt-tokenizer.js";
import { testModel } from "../helpers/models.js";
import { NO_SHARED, vocabDir } from "../helpers/paths.js";
import { rng } from "../helpers/rng.js";

// The chunked tokenizer against node-llama-cpp's own tokenization of the whole templated conversation, on the
// project's own vocabulary and on two real ones (byte-level BPE with a pre-tokenizer, and SentencePiece).

const PIECES = [
  "function add(a, b) {\n  return a + b;\n}\n",
  "    if (x) {\n\t\treturn;\n    }\n",
  "The quick brown fox jumps over the lazy dog. ",
  "Ünïcödé façade — naïve café. ",
  "日本語のテキストと中文。",
  "emoji 🎉🚀 and 👩‍💻 ",
  "\n\n\n",
  "        ",
  "x=1;y=2;z=3;",
  "SELECT * FROM t WHERE id = 42;\n",
  "<|im_start|>not special<|im_end|> ",
  "[INST] raw [/INST] ",
  "1234567890 ",
  "\r\n",
];

/** A long text of mixed code, prose, scripts, emoji and white space runs, the same for a seed. */
function mixedText(seed: number, chars: number): string {
  const r = rng(seed);
  let s = "";
  while (s.length < chars) s += PIECES[Math.floor(r() * PIECES.length)];
  return s;
}

/** node-llama-cpp's tokenization of the whole templated conversation, as the engine did it before chunking. */
function reference(model: LlamaModel, messages: readonly ChatMessage[]): number[] {
  const history: ChatHistoryItem[] = messages.map((m): ChatHistoryItem =>
    m.role === "system"
      ? { type: "system", text: m.content }
      : m.role === "user"
        ? { type: "user", text: m.content }
        : { type: "model", response: [m.content] },
  );
  history.push({ type: "model", response: [] });
  return resolveChatWrapper(model).generateContextState({ chatHistory: history }).contextText.tokenize(model.tokenizer);
}

/** Runs `work`, counting the turns the event loop gave other callbacks meanwhile. */
async function turnsDuring<T>(work: () => Promise<T>): Promise<{ result: T; turns: number }> {
  let turns = 0;
  let done = false;
  const tick = () => {
    if (!done) {
      turns++;
      setImmediate(tick);
    }
  };
  setImmediate(tick);
  const result = await work();
  done = true;
  return { result, turns };
}

/** The prompt tokenizer of the project's own tiny model's vocabulary, disposed after the test. */
async function ownTokenizer(
  llama: Llama,
  t: { after(fn: () => unknown): void },
): Promise<{ model: LlamaModel; tok: PromptTokenizer }> {
  const model = await llama.loadModel({ modelPath: testModel(), vocabOnly: true });
  t.after(() => model.dispose());
  return { model, tok: new PromptTokenizer(model, resolveChatWrapper(model)) };
}

const models: { name: string; path: () => string; skip: string | false }[] = [
  { name: "own vocabulary", path: () => testModel(), skip: false },
  { name: "phi-3", path: () => join(vocabDir!, "ggml-vocab-phi-3.gguf"), skip: vocabDir === null ? NO_SHARED : false },
  {
    name: "deepseek-coder",
    path: () => join(vocabDir!, "ggml-vocab-deepseek-coder.gguf"),
    skip: vocabDir === null ? NO_SHARED : false,
  },
];

describe("prompt tokenizer: chunks, turns of the event loop, limits", () => {
  let llama: Llama;
  before(async () => {
    llama = await getLlama({ gpu: false });
  });
  after(async () => {
    await llama?.dispose();
  });

  for (const m of models) {
    test(`${m.name}: a conversation of many chunks tokenizes exactly as a whole`, { skip: m.skip }, async (t) => {
      const model = await llama.loadModel({ modelPath: m.path(), vocabOnly: true });
      t.after(() => model.dispose());
      const tok = new PromptTokenizer(model, resolveChatWrapper(model));
      for (const seed of [1, 2, 3]) {
        const messages: ChatMessage[] = [
          { role: "system", content: mixedText(seed * 10, 3000) },
          { role: "user", content: mixedText(seed, CHUNK_CHARS * 6) },
          { role: "assistant", content: mixedText(seed * 100, CHUNK_CHARS * 2) },
          { role: "user", content: "And now?" },
        ];
        assert.deepEqual(await tok.encode(messages), reference(model, messages), `seed ${seed}`);
      }
    });
  }

  test("a long prompt is tokenized in turns: the event loop runs between its chunks", async (t) => {
    const { tok } = await ownTokenizer(llama, t);
    const messages: ChatMessage[] = [{ role: "user", content: mixedText(7, CHUNK_CHARS * 40) }];
    const { result: tokens, turns } = await turnsDuring(() => tok.encode(messages));
    assert.ok(Array.isArray(tokens));
    assert.ok(turns >= 20, `other work ran ${turns} times while 40 chunks were tokenized`);
  });

  test("with a limit, tokenizing stops soon after the limit, and a later call resumes where it stopped", async (t) => {
    const { model, tok } = await ownTokenizer(llama, t);
    const messages: ChatMessage[] = [{ role: "user", content: mixedText(8, CHUNK_CHARS * 60) }];
    const whole = reference(model, messages);
    const cut = await tok.encode(messages, 1000);
    assert.ok(!Array.isArray(cut), "a prompt over the limit is not tokenized whole");
    assert.ok(cut.atLeast > 1000, `${cut.atLeast} tokens found`);
    assert.ok(cut.atLeast < whole.length / 10, `${cut.atLeast} of ${whole.length} tokens were made before stopping`);
    assert.deepEqual(
      await tok.encode(messages),
      whole,
      "resumed from the kept chunks, the result is the whole tokenization",
    );
    assert.deepEqual(await tok.encode(messages, whole.length), whole, "a prompt exactly at the limit fits");
  });

  test("two requests with the same long text at once get the same tokens", async (t) => {
    const { model, tok } = await ownTokenizer(llama, t);
    const messages: ChatMessage[] = [{ role: "user", content: mixedText(9, CHUNK_CHARS * 10) }];
    const [a, b] = await Promise.all([tok.encode(messages), tok.encode(messages)]);
    assert.deepEqual(a, reference(model, messages));
    assert.deepEqual(b, a);
  });

  test("a text with no clean split point (one character repeated) is still tokenized in turns", async (t) => {
    const { tok } = await ownTokenizer(llama, t);
    const messages: ChatMessage[] = [{ role: "user", content: "a".repeat(CHUNK_CHARS * 10) }];
    const { result: tokens, turns } = await turnsDuring(() => tok.encode(messages));
    assert.ok(Array.isArray(tokens) && tokens.length > 0);
    assert.ok(turns >= 5, `other work ran ${turns} times`);
  });
});
