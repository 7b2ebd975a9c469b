import { readFileSync } from "node:fs";

/** The version of the package this server comes from (package.json, two levels above dist/src/config). */
export function packageVersion(): string {
  const file = new URL("../../../package.json", import.meta.url);
  return (JSON.parse(readFileSync(file, "utf8")) as { version: string }).version;
}
