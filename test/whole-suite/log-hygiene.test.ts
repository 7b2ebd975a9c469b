import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { testLogDir } from "../helpers/paths.js";

// The test runner orders files by path, so this folder runs after e2e/ and unit/: it reads what every
// server started during this run of the suite wrote (`npm test` empties the folder first).
test(
  "no line that any server wrote during the suite holds an API key",
  { skip: existsSync(testLogDir) ? false : "no server ran in this run" },
  () => {
    const files = readdirSync(testLogDir).filter((f) => f.endsWith(".log"));
    const lines = files.flatMap((f) => readFileSync(join(testLogDir, f), "utf8").split("\n").filter(Boolean));
    assert.ok(files.length >= 10 && lines.length >= 100, `${lines.length} lines from ${files.length} servers`);
    const leaks = lines.filter((l) => /sk-lucena-/.test(l));
    assert.deepEqual(
      leaks.map((l) => l.replace(/sk-lucena-\w+/g, "sk-lucena-<redacted>")),
      [],
      "lines holding a key",
    );
  },
);
