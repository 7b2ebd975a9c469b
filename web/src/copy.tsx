// A copy-to-clipboard button; falls back to a hidden textarea and execCommand where the Clipboard API is missing
// (a plain-http, non-localhost origin).
import { useEffect, useState } from "preact/hooks";

function fallbackCopy(text: string): boolean {
  const ta = document.createElement("textarea");
  ta.value = text;
  ta.setAttribute("readonly", "");
  ta.className = "offscreen";
  document.body.appendChild(ta);
  ta.select();
  let ok: boolean;
  try {
    ok = document.execCommand("copy");
  } catch {
    ok = false;
  }
  ta.remove();
  return ok;
}

export function CopyButton({ text, label = "Copy" }: { text: string; label?: string }) {
  const [state, setState] = useState<"idle" | "copied" | "failed">("idle");
  useEffect(() => {
    if (state === "idle") return;
    const t = setTimeout(() => setState("idle"), 2000);
    return () => clearTimeout(t);
  }, [state]);
  const copy = async () => {
    let ok = false;
    try {
      if (navigator.clipboard) {
        await navigator.clipboard.writeText(text);
        ok = true;
      }
    } catch {
      ok = false;
    }
    if (!ok) ok = fallbackCopy(text);
    setState(ok ? "copied" : "failed");
  };
  return (
    <button type="button" class="secondary copy" onClick={copy}>
      {state === "copied" ? "Copied" : state === "failed" ? "Select and copy by hand" : label}
    </button>
  );
}
