import { chmodSync, closeSync, mkdirSync, openSync, statSync } from "node:fs";

/**
 * The data directory holds the key store and the usage ledger: made private (0700) when this process makes
 * it. A directory that already exists keeps its mode, whoever owns it: it may be a path the operator chose
 * for other uses too (a home directory, a shared volume; as root even /tmp would be "ours"), and changing
 * that is the operator's call. The files inside are made private either way (privateFile below).
 * Returns a warning to log when the existing directory lets other users in, else null.
 */
export function privateDataDir(dir: string): string | null {
  // mkdirSync's mode applies to every directory it creates, the parents too; an existing one is untouched.
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const mode = statSync(dir).mode & 0o777;
  if ((mode & 0o077) === 0) return null;
  return `the data directory ${dir} is open to other users (mode ${mode.toString(8).padStart(4, "0")}); its database files are kept 0600, but consider chmod 700 on the directory`;
}

/**
 * Creates `path` empty with mode 0600 when it does not exist, or takes an existing one down to 0600; the same for
 * each of `companions` that exists. For SQLite: an empty file is a valid new database, and SQLite gives the WAL
 * and shared-memory files it creates later the database file's own mode, so they are born 0600 too.
 * Returns a warning for each file that stays readable by others (one this user does not own cannot be changed).
 */
export function privateFile(path: string, companions: readonly string[] = []): string[] {
  closeSync(openSync(path, "a", 0o600));
  const warnings: string[] = [];
  for (const file of [path, ...companions]) {
    let mode: number;
    try {
      mode = statSync(file).mode & 0o777;
    } catch {
      continue; // a companion that does not exist (yet)
    }
    if ((mode & 0o077) === 0) continue;
    try {
      chmodSync(file, mode & 0o700);
    } catch (err) {
      warnings.push(
        `${file} is readable by other users (mode ${mode.toString(8)}) and could not be changed: ${(err as Error).message}`,
      );
    }
  }
  return warnings;
}
