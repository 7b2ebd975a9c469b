import { createInterface } from "node:readline";
import { Command } from "commander";
import { createParser } from "eventsource-parser";

interface ChatOptions {
  url: string;
  key?: string;
  model: string;
  system?: string;
  maxTokens?: string;
}

interface Message {
  role: "system" | "user" | "assistant";
  content: string;
}

const HELP = "Commands: /reset (forget the conversation), /system TEXT (set the system prompt), /exit (or Ctrl-D).\n";

/**
 * `lucena chat`: a terminal chat against a running server, as `ollama run` and `llama-cli` are: answers stream
 * as they come, the conversation goes on turn after turn, Ctrl-C stops an answer (and, at an empty prompt,
 * leaves), `/reset` forgets the conversation and `/system` sets its system prompt.
 */
export function chatCommand(): Command {
  return new Command("chat")
    .description("chat with a model of a running server in the terminal (streamed, multi-turn)")
    .option("--url <url>", "the server's base URL", process.env.LUCENA_BASE_URL ?? "http://127.0.0.1:8080")
    .option("--key <key>", "an API key (or set LUCENA_API_KEY, which stays out of the process list)")
    .option("--model <id>", "the model", "lucena-coder-latest")
    .option("--system <text>", "a system prompt")
    .option("--max-tokens <n>", "the most tokens an answer may have")
    .action(async (o: ChatOptions) => {
      const key = o.key ?? process.env.LUCENA_API_KEY;
      if (!key) {
        process.stderr.write("lucena chat: give a key with --key or LUCENA_API_KEY (lucena keys create makes one)\n");
        process.exitCode = 2;
        return;
      }
      await chatLoop({ ...o, key });
    });
}

async function chatLoop(o: ChatOptions & { key: string }): Promise<void> {
  const out = process.stdout;
  let system = o.system ?? null;
  let history: Message[] = [];
  let answering: AbortController | null = null;
  const rl = createInterface({ input: process.stdin, output: out, prompt: ">>> " });
  out.write(`Chatting with ${o.model} at ${o.url}. ${HELP}`);
  rl.on("SIGINT", () => {
    if (answering) answering.abort();
    else rl.close();
  });
  rl.prompt();
  for await (const line of rl) {
    const text = line.trim();
    if (text === "/exit" || text === "/bye") break;
    if (text === "/reset") {
      history = [];
      out.write("(the conversation is forgotten)\n");
    } else if (text.startsWith("/system")) {
      system = text.slice("/system".length).trim() || null;
      out.write(system ? "(system prompt set)\n" : "(system prompt cleared)\n");
    } else if (text.startsWith("/")) {
      out.write(HELP);
    } else if (text !== "") {
      history.push({ role: "user", content: text });
      answering = new AbortController();
      const answer = await ask(
        o,
        [...(system ? [{ role: "system" as const, content: system }] : []), ...history],
        answering.signal,
      );
      answering = null;
      // A stopped answer stays in the conversation as far as it came, as in a chat app.
      if (answer.text) history.push({ role: "assistant", content: answer.text });
      else history.pop();
      out.write(answer.error ? `\n[${answer.error}]\n` : answer.stopped ? "\n[stopped]\n" : "\n");
    }
    rl.prompt();
  }
  rl.close();
}

/** One answer, streamed to the terminal as it comes. */
async function ask(
  o: ChatOptions & { key: string },
  messages: Message[],
  signal: AbortSignal,
): Promise<{ text: string; stopped: boolean; error: string | null }> {
  let text = "";
  try {
    const res = await fetch(`${o.url.replace(/\/+$/, "")}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${o.key}`, "content-type": "application/json" },
      body: JSON.stringify({
        model: o.model,
        messages,
        stream: true,
        ...(o.maxTokens ? { max_tokens: Number(o.maxTokens) } : {}),
      }),
      signal,
    });
    if (!res.ok || !res.body) {
      const body = (await res.json().catch(() => null)) as { error?: { message?: string } | string } | null;
      const message = typeof body?.error === "string" ? body.error : body?.error?.message;
      return { text, stopped: false, error: `${res.status}: ${message ?? res.statusText}` };
    }
    let error: string | null = null;
    const parser = createParser({
      onEvent: (ev) => {
        if (ev.data === "[DONE]") return;
        const chunk = JSON.parse(ev.data) as {
          choices?: { delta?: { content?: string } }[];
          error?: { message?: string };
        };
        if (chunk.error) error = chunk.error.message ?? "error";
        const piece = chunk.choices?.[0]?.delta?.content;
        if (piece) {
          text += piece;
          process.stdout.write(piece);
        }
      },
    });
    const decoder = new TextDecoder();
    for await (const bytes of res.body) parser.feed(decoder.decode(bytes as Uint8Array, { stream: true }));
    return { text, stopped: false, error };
  } catch (err) {
    if (signal.aborted) return { text, stopped: true, error: null };
    return { text, stopped: false, error: (err as Error).message };
  }
}
