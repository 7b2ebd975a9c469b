import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** Tests run compiled from dist/test/…; the repository root is found from there. */
function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) dir = dirname(dir);
  return dir;
}

export const repoRoot = findRoot();
export const cliPath = join(repoRoot, "dist", "src", "cli", "main.js");

/** ../shared/fixtures/vocab beside the repository, or null where it is absent (tests then skip). */
export const vocabDir: string | null = (() => {
  const dir = resolve(repoRoot, "..", "shared", "fixtures", "vocab");
  return existsSync(dir) ? dir : null;
})();

export const NO_SHARED =
  "../shared/fixtures/vocab is absent beside the repository: tests that need the real vocabularies are skipped";

/**
 * Every line that a server started by the tests writes (stdout and stderr) is also kept here, one file per
 * server process, so a whole-suite check can read them all. `npm test` empties it before each run.
 */
export const testLogDir = join(repoRoot, "dist", "test-logs");
