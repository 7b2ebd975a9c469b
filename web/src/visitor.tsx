// `/`: what this server offers, how to call it, and the form to request an API key.
import { useEffect, useState } from "preact/hooks";
import { api, errorText, ApiError } from "./api";
import { CopyButton } from "./copy";
import { num } from "./format";
import { ErrorText, mount } from "./layout";
import type { AccessRequestCreated, ModelInfo, ServerInfo } from "./types";

const origin = location.origin;

function snippets(models: ModelInfo[]) {
  const chat = models.find((m) => m.kind === "chat");
  const embed = models.find((m) => m.kind === "embedding");
  const id = JSON.stringify(chat?.id ?? embed?.id ?? "MODEL_ID");
  if (!chat && embed) {
    return {
      curl: `curl ${origin}/v1/embeddings \\
  -H "Authorization: Bearer $LUCENA_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{"model": ${id}, "input": "Hello!"}'`,
      python: `import os
from openai import OpenAI

client = OpenAI(base_url="${origin}/v1", api_key=os.environ["LUCENA_API_KEY"])
emb = client.embeddings.create(model=${id}, input="Hello!")
print(len(emb.data[0].embedding))`,
      js: `import OpenAI from "openai";

const client = new OpenAI({ baseURL: "${origin}/v1", apiKey: process.env.LUCENA_API_KEY });
const emb = await client.embeddings.create({ model: ${id}, input: "Hello!" });
console.log(emb.data[0].embedding.length);`,
    };
  }
  return {
    curl: `curl ${origin}/v1/chat/completions \\
  -H "Authorization: Bearer $LUCENA_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{"model": ${id}, "messages": [{"role": "user", "content": "Hello!"}]}'`,
    python: `import os
from openai import OpenAI

client = OpenAI(base_url="${origin}/v1", api_key=os.environ["LUCENA_API_KEY"])
reply = client.chat.completions.create(
    model=${id},
    messages=[{"role": "user", "content": "Hello!"}],
)
print(reply.choices[0].message.content)`,
    js: `import OpenAI from "openai";

const client = new OpenAI({ baseURL: "${origin}/v1", apiKey: process.env.LUCENA_API_KEY });
const reply = await client.chat.completions.create({
  model: ${id},
  messages: [{ role: "user", content: "Hello!" }],
});
console.log(reply.choices[0].message.content);`,
  };
}

function Snippet({ title, code, testid }: { title: string; code: string; testid?: string }) {
  return (
    <div class="snippet">
      <div class="snippet-head">
        <span>{title}</span>
        <CopyButton text={code} />
      </div>
      <pre>
        <code data-testid={testid}>{code}</code>
      </pre>
    </div>
  );
}

function Models({ models }: { models: ModelInfo[] }) {
  return (
    <ul class="models" data-testid="models">
      {models.map((m) => (
        <li key={m.id} class="card model" data-model-id={m.id}>
          <div class="model-head">
            <strong>{m.name || m.id}</strong> <code>{m.id}</code> <span class="badge">{m.kind}</span>
          </div>
          {m.description && <p>{m.description}</p>}
          <p class="muted">
            Context window {num(m.context_window)} tokens
            {m.kind === "chat" ? ` · max output ${num(m.max_output_tokens)} tokens` : ""}
            {m.shapes.length > 0 ? ` · shapes: ${m.shapes.join(", ")}` : ""}
          </p>
        </li>
      ))}
    </ul>
  );
}

function RequestForm() {
  const [name, setName] = useState("");
  const [contact, setContact] = useState("");
  const [purpose, setPurpose] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState<AccessRequestCreated | null>(null);

  const submit = async (e: Event) => {
    e.preventDefault();
    if (!name.trim() || !contact.trim() || !purpose.trim()) {
      setError("Please fill in all three fields.");
      return;
    }
    setBusy(true);
    setError(null);
    try {
      setDone(
        await api<AccessRequestCreated>("/console/api/access-requests", {
          method: "POST",
          body: { name: name.trim(), contact: contact.trim(), purpose: purpose.trim() },
        }),
      );
    } catch (err) {
      const field = err instanceof ApiError && err.param ? ` (field: ${err.param})` : "";
      setError(errorText(err) + field);
    } finally {
      setBusy(false);
    }
  };

  if (done) {
    const link = origin + done.status_path;
    return (
      <div class="card notice success">
        <h3>Request sent</h3>
        <p>
          <strong>Bookmark it: this link is the only way to get your key.</strong> Once the operator approves your
          request, open it to reveal your key.
        </p>
        <p class="link-line">
          <a data-testid="status-link" href={link}>
            {link}
          </a>
          <CopyButton text={link} label="Copy link" />
        </p>
      </div>
    );
  }
  return (
    <form class="card form" data-testid="request-form" onSubmit={submit}>
      <label class="field">
        <span>Your name</span>
        <input name="name" required maxLength={100} value={name} onInput={(e) => setName(e.currentTarget.value)} />
      </label>
      <label class="field">
        <span>How to reach you (email, chat handle…)</span>
        <input
          name="contact"
          required
          maxLength={200}
          value={contact}
          onInput={(e) => setContact(e.currentTarget.value)}
        />
      </label>
      <label class="field">
        <span>What it is for</span>
        <textarea
          name="purpose"
          required
          maxLength={2000}
          rows={4}
          value={purpose}
          onInput={(e) => setPurpose(e.currentTarget.value)}
        />
      </label>
      <ErrorText text={error} testid="form-error" />
      <button type="submit" data-testid="request-submit" disabled={busy}>
        {busy ? "Sending…" : "Request API access"}
      </button>
    </form>
  );
}

function Visitor() {
  const [info, setInfo] = useState<ServerInfo | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    api<ServerInfo>("/console/api/info").then(setInfo, (e: unknown) => setError(errorText(e)));
  }, []);

  if (error) return <ErrorText text={`Could not load this server's information: ${error}`} />;
  if (!info) return <p class="muted">Loading…</p>;
  const s = snippets(info.models);
  return (
    <>
      <section>
        <h1>{info.server}</h1>
        <p class="lead">
          A self-hosted, OpenAI-compatible LLM API (version {info.version}). Use it with any OpenAI client: point the
          client at this server and authenticate with an API key. Keys are issued by the operator of this server, each
          with its own limits (requests and tokens per minute, concurrent requests, allowed models, expiry).
        </p>
        <p>
          Base URL: <code data-testid="base-url">{origin}</code> (the API lives under <code>{origin}/v1</code>)
        </p>
      </section>
      <section>
        <h2>Models</h2>
        {info.models.length ? <Models models={info.models} /> : <p class="muted">No models are loaded.</p>}
      </section>
      <section>
        <h2>Quick start</h2>
        <Snippet title="curl" code={s.curl} testid="curl-snippet" />
        <div class="snippets">
          <Snippet title="Python (openai)" code={s.python} testid="openai-snippet" />
          <Snippet title="JavaScript (openai)" code={s.js} />
        </div>
      </section>
      <section>
        <h2>Request API access</h2>
        {info.access_requests_open ? (
          <RequestForm />
        ) : (
          <p class="card notice" data-testid="requests-closed">
            This server does not take access requests right now. Ask its operator for a key.
          </p>
        )}
      </section>
    </>
  );
}

mount("visitor", Visitor);
