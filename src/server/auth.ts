import { createHash } from "node:crypto";
import { errors } from "./errors.js";

/** Who a request is from, and what it may do; never the key itself. */
export interface Principal {
  keyId: string;
  /** Per-key limits; null fields are unlimited. */
  limits: { rpm: number | null; tpm: number | null; concurrency: number | null };
  /** The models this key may use; null: all. */
  models: readonly string[] | null;
}

const UNLIMITED: Principal["limits"] = { rpm: null, tpm: null, concurrency: null };

/**
 * Checks a presented key. Implementations compare SHA-256 hashes through a map lookup, so the time taken
 * does not depend on how much of a key matched.
 */
export interface KeyVerifier {
  /** `hash` is the key's SHA-256, when the caller has it already (a chain hashes once for all its verifiers). */
  verify(presentedKey: string, hash?: string): Principal | null;
  /**
   * Whether a key this verifier admitted may still be used (not revoked, not expired); undefined for a key id that
   * is not its own. Absent: its keys stay usable for as long as the process runs.
   */
  stillUsable?(keyId: string): boolean | undefined;
}

export function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** Keys from configuration (`LUCENA_API_KEYS`, `api_keys`), held only as hashes. */
export class StaticKeys implements KeyVerifier {
  private readonly byHash = new Map<string, Principal>();

  constructor(keys: readonly string[]) {
    keys.forEach((k, i) => this.byHash.set(sha256Hex(k), { keyId: `config-${i + 1}`, limits: UNLIMITED, models: null }));
  }

  verify(presentedKey: string, hash = sha256Hex(presentedKey)): Principal | null {
    return this.byHash.get(hash) ?? null;
  }
}

/** Tries each verifier in turn (configured keys, then the key store). */
export class KeyChain implements KeyVerifier {
  constructor(private readonly verifiers: readonly KeyVerifier[]) {}
  verify(presentedKey: string, hash = sha256Hex(presentedKey)): Principal | null {
    for (const v of this.verifiers) {
      const p = v.verify(presentedKey, hash);
      if (p) return p;
    }
    return null;
  }

  stillUsable(keyId: string): boolean | undefined {
    for (const v of this.verifiers) {
      const usable = v.stillUsable?.(keyId);
      if (usable !== undefined) return usable;
    }
    return undefined;
  }
}

const BEARER = /^Bearer[ \t]+(\S+)[ \t]*$/i;

/** The token of an `Authorization: Bearer <token>` header, or null when there is none. */
export function bearerToken(header: string | undefined): string | null {
  return header === undefined ? null : (BEARER.exec(header)?.[1] ?? null);
}

/**
 * A header that presents no credential at all: empty or blank, or the Bearer scheme with no token (what a client
 * sends when the variable holding its key is unset). It gets the same answer as no header.
 */
const NO_CREDENTIAL = /^[ \t]*(Bearer)?[ \t]*$/i;

/**
 * The key of an `Authorization: Bearer` header; throws the 401 bodies of decisions.md: no credential (no header,
 * a blank one, `Bearer` alone) is the missing key; any other header that is not `Bearer <token>` (`Basic …`, a
 * bare key, `Bearer <key> extra`) is an invalid key, since it presents something that is not a key of ours.
 */
export function authenticate(header: string | undefined, verifier: KeyVerifier): Principal {
  if (header === undefined || NO_CREDENTIAL.test(header)) throw errors.missingKey();
  const key = bearerToken(header);
  if (key === null) throw errors.invalidKey();
  const principal = verifier.verify(key);
  if (!principal) throw errors.invalidKey();
  return principal;
}
