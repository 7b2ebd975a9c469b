// Model text as text: paragraphs and `inline code` as Preact children, fenced ```lang blocks highlighted by
// highlight.js. The only HTML inserted is highlight.js's own escaped output; an unknown language stays plain text.
import hljs from "highlight.js/lib/core";
import bash from "highlight.js/lib/languages/bash";
import c from "highlight.js/lib/languages/c";
import cpp from "highlight.js/lib/languages/cpp";
import css from "highlight.js/lib/languages/css";
import go from "highlight.js/lib/languages/go";
import java from "highlight.js/lib/languages/java";
import javascript from "highlight.js/lib/languages/javascript";
import json from "highlight.js/lib/languages/json";
import python from "highlight.js/lib/languages/python";
import rust from "highlight.js/lib/languages/rust";
import sql from "highlight.js/lib/languages/sql";
import typescript from "highlight.js/lib/languages/typescript";
import xml from "highlight.js/lib/languages/xml";
import yaml from "highlight.js/lib/languages/yaml";
import "highlight.js/styles/github.css";
import { useMemo } from "preact/hooks";
import { CopyButton } from "./copy";

const languages = { bash, c, cpp, css, go, java, javascript, json, python, rust, sql, typescript, xml, yaml };
for (const [name, fn] of Object.entries(languages)) hljs.registerLanguage(name, fn);

type Block = { kind: "text"; text: string } | { kind: "code"; lang: string; code: string; open: boolean };

const fence = /^ {0,3}(`{3,}|~{3,})\s*([\w#+.-]*)[^\n`]*$/;

/** Splits text into prose and fenced code blocks; an unclosed fence (still streaming) runs to the end. */
export function parseBlocks(text: string): Block[] {
  const blocks: Block[] = [];
  const lines = text.split("\n");
  let prose: string[] = [];
  let code: { marker: string; lang: string; lines: string[] } | null = null;
  const flushProse = () => {
    const t = prose.join("\n").replace(/^\n+|\n+$/g, "");
    if (t) blocks.push({ kind: "text", text: t });
    prose = [];
  };
  for (const line of lines) {
    if (code) {
      const trimmed = line.trim();
      if (trimmed.startsWith(code.marker) && /^[`~]+$/.test(trimmed)) {
        blocks.push({ kind: "code", lang: code.lang, code: code.lines.join("\n"), open: false });
        code = null;
      } else {
        code.lines.push(line);
      }
      continue;
    }
    const m = fence.exec(line);
    if (m) {
      flushProse();
      code = { marker: m[1] ?? "```", lang: (m[2] ?? "").toLowerCase(), lines: [] };
    } else {
      prose.push(line);
    }
  }
  flushProse();
  if (code) blocks.push({ kind: "code", lang: code.lang, code: code.lines.join("\n"), open: true });
  return blocks;
}

function Inline({ text }: { text: string }) {
  const parts = text.split(/(`[^`\n]+`)/g);
  return (
    <p class="md-text">
      {parts.map((p, i) =>
        p.length > 2 && p.startsWith("`") && p.endsWith("`") ? <code key={i}>{p.slice(1, -1)}</code> : p,
      )}
    </p>
  );
}

function CodeBlock({ lang, code }: { lang: string; code: string }) {
  const known = lang !== "" && hljs.getLanguage(lang) !== undefined;
  const html = useMemo(
    () => (known ? hljs.highlight(code, { language: lang, ignoreIllegals: true }).value : null),
    [known, lang, code],
  );
  return (
    <div class="code-block">
      <div class="code-head">
        <span>{lang || "text"}</span>
        <CopyButton text={code} />
      </div>
      <pre>
        {html !== null ? (
          <code class={`hljs language-${lang}`} dangerouslySetInnerHTML={{ __html: html }} />
        ) : (
          <code class="hljs">{code}</code>
        )}
      </pre>
    </div>
  );
}

export function Markdown({ text }: { text: string }) {
  const blocks = useMemo(() => parseBlocks(text), [text]);
  return (
    <div class="md">
      {blocks.map((b, i) =>
        b.kind === "text" ? <Inline key={i} text={b.text} /> : <CodeBlock key={i} lang={b.lang} code={b.code} />,
      )}
    </div>
  );
}
