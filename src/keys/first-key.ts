import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Logger } from "../observability/log.js";

export const FIRST_KEY_FILE = "first-key.txt";

/**
 * Shows the key made on first start, once. On a terminal it is printed there (stderr) with a curl line that
 * uses it. Without one (a service, a container, CI) stderr usually ends up in a log, and no log may ever hold
 * a key: the same text goes to a file readable only by this user, and the log says where.
 */
export function announceFirstKey(key: string, baseUrl: string, dataDir: string, log: Logger): void {
  const text =
    `Lucena One created its first API key. It is shown this once; only its hash is stored.\n\n` +
    `  ${key}\n\n  curl ${baseUrl}/v1/models -H "Authorization: Bearer ${key}"\n\n` +
    `Manage keys with: lucena keys create|list|revoke|usage --data-dir ${dataDir}\n`;
  if (process.stderr.isTTY) {
    process.stderr.write(`\n${text}\n`);
    log.info("created the first API key; it was shown on the terminal");
    return;
  }
  const file = join(dataDir, FIRST_KEY_FILE);
  writeFileSync(file, text, { mode: 0o600 });
  log.warn(
    { file },
    "created the first API key: it is in this file (readable by this user only); read it, then delete the file",
  );
}

/**
 * On a later start, with keys only in the key store (none configured): how to get one, since the first key was
 * shown once and may be gone. On a terminal, a line there; always, a line in the log.
 */
export function announceKeyStore(count: number, dataDir: string, log: Logger): void {
  const how = `lucena keys create --name NAME --data-dir ${dataDir}`;
  if (process.stderr.isTTY) {
    process.stderr.write(`\nAPI keys are in the key store (${count}). To make one for yourself: ${how}\n\n`);
  }
  log.info({ keys: count, command: how }, "API keys are in the key store; the command makes one");
}
