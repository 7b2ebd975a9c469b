import { createHash } from "node:crypto";
import { errors } from "./errors.js";

/** Who a request is from; never the key itself. */
export interface Principal {
  keyId: string;
}

/**
 * Checks a presented key. Implementations compare SHA-256 hashes through a map lookup, so the time taken
 * does not depend on how much of a key matched.
 */
export interface KeyVerifier {
  verify(presentedKey: string): Principal | null;
}

export function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** Keys from configuration (`LUCENA_API_KEYS`, `api_keys`), held only as hashes. */
export class StaticKeys implements KeyVerifier {
  private readonly byHash = new Map<string, Principal>();

  constructor(keys: readonly string[]) {
    keys.forEach((k, i) => this.byHash.set(sha256Hex(k), { keyId: `config-${i + 1}` }));
  }

  verify(presentedKey: string): Principal | null {
    return this.byHash.get(sha256Hex(presentedKey)) ?? null;
  }
}

const BEARER = /^Bearer[ \t]+(\S+)[ \t]*$/i;

/** The key of an `Authorization: Bearer` header; throws the 401 bodies of decisions.md. */
export function authenticate(header: string | undefined, verifier: KeyVerifier): Principal {
  const match = header === undefined ? null : BEARER.exec(header);
  if (!match) throw errors.missingKey();
  const principal = verifier.verify(match[1]);
  if (!principal) throw errors.invalidKey();
  return principal;
}
