import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { describe, test } from "node:test";
import { repoRoot } from "../helpers/paths.js";

/**
 * The house's layers, checked on the sources (type imports included): core at the bottom imports nothing of the
 * project above it; nothing below the server imports the server or the CLI; one engine never imports the other;
 * node-llama-cpp is imported only by the embedded engine's own modules (so a gateway never loads it).
 */
const src = join(repoRoot, "src");

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : [],
  );
}

/** Each file's imports (static, dynamic and type-only): project files as paths relative to src/, packages by name. */
const files = sources(src).map((file) => {
  const text = readFileSync(file, "utf8");
  const specifiers = [...text.matchAll(/(?:from|import)\s*\(?\s*"([^"]+)"/g)].map((m) => m[1]);
  const imports = specifiers.map((s) =>
    s.startsWith(".") ? relative(src, resolve(dirname(file), s)).replace(/\.js$/, ".ts") : s,
  );
  return { file: relative(src, file), imports };
});

const inside = (path: string, ...dirs: string[]) => dirs.some((d) => path.startsWith(`${d}/`));
const projectFile = (i: string) => !i.startsWith("node:") && i.endsWith(".ts");

describe("layers", () => {
  test("the sources were found and read", () => {
    assert.ok(files.length > 40, `${files.length} source files`);
    assert.ok(files.some((f) => f.file === "core/errors.ts"));
  });

  test("core imports nothing of the project outside core", () => {
    for (const f of files.filter((f) => inside(f.file, "core"))) {
      for (const i of f.imports.filter(projectFile)) assert.ok(inside(i, "core"), `${f.file} imports ${i}`);
    }
  });

  test("nothing below the server imports the server or the CLI", () => {
    for (const f of files.filter((f) => !inside(f.file, "server", "cli"))) {
      for (const i of f.imports) assert.ok(!inside(i, "server", "cli"), `${f.file} imports ${i}`);
    }
  });

  test("one engine never imports the other", () => {
    for (const [mine, other] of [
      ["engines/upstream", "engines/llama"],
      ["engines/llama", "engines/upstream"],
    ]) {
      for (const f of files.filter((f) => inside(f.file, mine))) {
        for (const i of f.imports) {
          // The upstream engine loads the GGUF counter by a dynamic import, only for a model configured with one.
          const lazyCounter = f.file === "engines/upstream/upstream-engine.ts" && i === "engines/llama/gguf-counter.ts";
          assert.ok(!inside(i, other) || lazyCounter, `${f.file} imports ${i}`);
        }
      }
    }
  });

  test("node-llama-cpp is imported only under engines/llama", () => {
    const importers = files.filter((f) => f.imports.includes("node-llama-cpp")).map((f) => f.file);
    assert.ok(importers.length > 0);
    for (const f of importers) assert.ok(inside(f, "engines/llama"), `${f} imports node-llama-cpp`);
  });
});
