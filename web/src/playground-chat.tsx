// The playground's conversation: its messages, how one is shown, and the history sent with the next question.
import { useEffect, useRef } from "preact/hooks";
import type { ChatMessage } from "./chat-stream";
import { Markdown } from "./markdown";

export interface Stats {
  promptTokens?: number;
  completionTokens?: number;
  ttftMs?: number;
}

export interface Message {
  id: number;
  role: "user" | "assistant";
  content: string;
  state?: "streaming" | "done" | "stopped" | "error";
  stats?: Stats;
}

/** The conversation as sent: each question with its answer, leaving out those whose answer failed or is empty. */
export function history(messages: Message[]): ChatMessage[] {
  const out: ChatMessage[] = [];
  messages.forEach((m, i) => {
    const reply = messages[i + 1];
    if (m.role === "user" && reply?.role === "assistant" && reply.state !== "error" && reply.content.trim()) {
      out.push({ role: "user", content: m.content }, { role: "assistant", content: reply.content });
    }
  });
  return out;
}

function StatsLine({ s }: { s: Stats }) {
  const parts: string[] = [];
  if (s.promptTokens !== undefined && s.completionTokens !== undefined) {
    parts.push(`${s.promptTokens} prompt + ${s.completionTokens} completion tokens`);
  }
  if (s.ttftMs !== undefined) parts.push(`first token ${s.ttftMs} ms`);
  if (!parts.length) return null;
  return (
    <div
      class="stats"
      data-testid="pg-stats"
      data-prompt-tokens={s.promptTokens}
      data-completion-tokens={s.completionTokens}
      data-ttft-ms={s.ttftMs}
    >
      {parts.join(" · ")}
    </div>
  );
}

const stateLabel = { streaming: "", done: "", stopped: "Stopped.", error: "Failed." };

function MessageView({ m }: { m: Message }) {
  if (m.role === "user") {
    return (
      <div class="msg msg-user" data-testid="pg-message" data-role="user">
        <div class="msg-body">{m.content}</div>
      </div>
    );
  }
  const state = m.state ?? "done";
  return (
    <div class={`msg msg-assistant msg-${state}`} data-testid="pg-message" data-role="assistant" data-state={state}>
      {m.content ? <Markdown text={m.content} /> : state === "streaming" && <p class="muted typing">Thinking…</p>}
      {stateLabel[state] && <p class="muted">{stateLabel[state]}</p>}
      {state !== "streaming" && m.stats && <StatsLine s={m.stats} />}
    </div>
  );
}

export function Conversation({ messages }: { messages: Message[] }) {
  const box = useRef<HTMLDivElement>(null);
  const last = messages[messages.length - 1];
  useEffect(() => {
    const el = box.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [messages.length, last?.content]);
  return (
    <div class="conversation" ref={box} aria-live="polite">
      {messages.length === 0 && <p class="muted">Ask something to start the conversation.</p>}
      {messages.map((m) => (
        <MessageView key={m.id} m={m} />
      ))}
    </div>
  );
}
