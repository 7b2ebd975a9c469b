// `/playground`: chat with a model using an API key kept in sessionStorage only (never in a URL, never logged).
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, api, errorText } from "./api";
import { streamChat } from "./chat-stream";
import { ErrorText, mount } from "./layout";
import { Conversation, history, type Message, type Stats } from "./playground-chat";
import { MyUsagePanel } from "./playground-usage";
import type { OpenAIModel, ServerInfo } from "./types";

const storageKey = "lucena-playground-key";

function storedKey(): string | null {
  try {
    return sessionStorage.getItem(storageKey);
  } catch {
    return null;
  }
}

function storeKey(key: string | null) {
  try {
    if (key === null) sessionStorage.removeItem(storageKey);
    else sessionStorage.setItem(storageKey, key);
  } catch {
    // Storage refused (private mode): the key lives in this page only.
  }
}

function explain(e: unknown): string {
  if (e instanceof ApiError && e.status === 401) {
    return `The key was refused (${e.message}): it may be mistyped, revoked or expired.`;
  }
  if (e instanceof ApiError && e.status === 429) return `Too many requests for this key: ${errorText(e)}`;
  return errorText(e);
}

let nextId = 1;

function Playground() {
  const [key, setKey] = useState<string | null>(storedKey);
  const [keyInput, setKeyInput] = useState("");
  const [models, setModels] = useState<OpenAIModel[]>([]);
  const [modelId, setModelId] = useState("");
  const [shape, setShape] = useState("default");
  const [messages, setMessages] = useState<Message[]>([]);
  const [input, setInput] = useState("");
  const [streaming, setStreaming] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [usageVersion, setUsageVersion] = useState(0);
  const abort = useRef<AbortController | null>(null);

  useEffect(() => {
    setModels([]);
    if (!key) return;
    let live = true;
    const kinds = api<ServerInfo>("/console/api/info").then(
      (i) => new Map(i.models.map((m) => [m.id, m.kind])),
      () => new Map<string, string>(),
    );
    Promise.all([api<{ data: OpenAIModel[] }>("/v1/models", { bearer: key }), kinds]).then(
      ([r, kind]) => {
        if (!live) return;
        const chat = r.data.filter((m) => kind.get(m.id) !== "embedding");
        setModels(chat);
        setModelId((cur) => (chat.some((m) => m.id === cur) ? cur : (chat[0]?.id ?? "")));
        setError(chat.length ? null : "This key cannot use any chat model.");
      },
      (e: unknown) => live && setError(explain(e)),
    );
    return () => {
      live = false;
    };
  }, [key]);

  const model = models.find((m) => m.id === modelId);
  const shapes = (model?.available_shapes ?? []).filter((s) => s !== "default");

  const saveKey = (e: Event) => {
    e.preventDefault();
    const k = keyInput.trim();
    if (!k) return;
    storeKey(k);
    setKey(k);
    setKeyInput("");
    setError(null);
  };
  const forget = () => {
    abort.current?.abort();
    storeKey(null);
    setKey(null);
    setKeyInput("");
    setModels([]);
    setModelId("");
    setError(null);
  };

  const send = async () => {
    const text = input.trim();
    if (!text || streaming) return;
    if (!key) {
      setError("Paste an API key above first.");
      return;
    }
    const body = {
      model: modelId,
      messages: [...history(messages), { role: "user" as const, content: text }],
      ...(shape !== "default" ? { shape } : {}),
    };
    const answerId = nextId + 1;
    nextId += 2;
    setMessages((ms) => [
      ...ms,
      { id: answerId - 1, role: "user", content: text },
      { id: answerId, role: "assistant", content: "", state: "streaming", stats: {} },
    ]);
    setInput("");
    setError(null);
    setStreaming(true);
    const ctrl = new AbortController();
    abort.current = ctrl;
    const update = (patch: (m: Message) => Partial<Message>) =>
      setMessages((ms) => ms.map((m) => (m.id === answerId ? { ...m, ...patch(m) } : m)));
    const stats = (s: Stats) => update((m) => ({ stats: { ...m.stats, ...s } }));
    const t0 = performance.now();
    let first = true;
    try {
      await streamChat(
        key,
        body,
        {
          onContent: (piece) => {
            if (first) {
              first = false;
              stats({ ttftMs: Math.round(performance.now() - t0) });
            }
            update((m) => ({ content: m.content + piece }));
          },
          onUsage: (promptTokens, completionTokens) => stats({ promptTokens, completionTokens }),
        },
        ctrl.signal,
      );
      update(() => ({ state: "done" }));
    } catch (e) {
      if (ctrl.signal.aborted) update(() => ({ state: "stopped" }));
      else {
        update(() => ({ state: "error" }));
        setError(explain(e));
      }
    } finally {
      abort.current = null;
      setStreaming(false);
      setUsageVersion((v) => v + 1);
    }
  };

  const onKeyDown = (e: KeyboardEvent) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      void send();
    }
  };

  return (
    <div class="playground">
      <h1>Playground</h1>
      <section class="card">
        <form class="key-form" onSubmit={saveKey} autocomplete="off">
          <label class="field grow">
            <span>API key {key ? `(set: ${key.slice(0, 14)}…)` : ""}</span>
            <input
              type="password"
              data-testid="pg-key"
              autocomplete="off"
              placeholder={key ? "paste another key to replace it" : "sk-lucena-…"}
              value={keyInput}
              onInput={(e) => setKeyInput(e.currentTarget.value)}
            />
          </label>
          <button type="submit" data-testid="pg-key-save">
            Use key
          </button>
          <button type="button" class="secondary" data-testid="pg-key-forget" onClick={forget} disabled={!key}>
            Forget
          </button>
        </form>
        <p class="muted small-print">The key is kept in this tab's session storage only and sent to this server.</p>
        <div class="filters">
          <label class="field">
            <span>Model</span>
            <select
              data-testid="pg-model"
              value={modelId}
              onChange={(e) => {
                setModelId(e.currentTarget.value);
                setShape("default");
              }}
            >
              {models.length === 0 && <option value="">{key ? "Loading…" : "Set a key first"}</option>}
              {models.map((m) => (
                <option key={m.id} value={m.id}>
                  {m.name && m.name !== m.id ? `${m.name} (${m.id})` : m.id}
                </option>
              ))}
            </select>
          </label>
          <label class="field">
            <span>Shape{model?.default_shape ? ` (default: ${model.default_shape})` : ""}</span>
            <select data-testid="pg-shape" value={shape} onChange={(e) => setShape(e.currentTarget.value)}>
              <option value="default">default</option>
              {shapes.map((s) => (
                <option key={s} value={s}>
                  {s}
                </option>
              ))}
            </select>
          </label>
          <button type="button" class="secondary" onClick={() => setMessages([])} disabled={streaming}>
            New conversation
          </button>
        </div>
      </section>
      <Conversation messages={messages} />
      <ErrorText text={error} testid="pg-error" />
      <div class="composer">
        <textarea
          data-testid="pg-input"
          rows={3}
          placeholder="Message (Enter sends, Shift+Enter for a new line)"
          value={input}
          onInput={(e) => setInput(e.currentTarget.value)}
          onKeyDown={onKeyDown}
        />
        <div class="composer-actions">
          <button type="button" data-testid="pg-send" onClick={() => void send()} disabled={streaming}>
            Send
          </button>
          <button
            type="button"
            class="danger"
            data-testid="pg-stop"
            onClick={() => abort.current?.abort()}
            disabled={!streaming}
          >
            Stop
          </button>
        </div>
      </div>
      {key && <MyUsagePanel apiKey={key} version={usageVersion} />}
    </div>
  );
}

mount("playground", Playground);
