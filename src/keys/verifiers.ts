import { sha256Hex } from "../core/ids.js";
import type { KeyVerifier, Principal } from "../core/principal.js";

const UNLIMITED: Principal["limits"] = { rpm: null, tpm: null, concurrency: null };

/** Keys from configuration (`LUCENA_API_KEYS`, `api_keys`), held only as hashes. */
export class StaticKeys implements KeyVerifier {
  private byHash = new Map<string, Principal>();

  constructor(keys: readonly string[]) {
    this.replace(keys);
  }

  /** The configured keys from now on (a reload): a key no longer listed stops working, mid-answer too. */
  replace(keys: readonly string[]): void {
    this.byHash = new Map(
      keys.map((k, i) => [sha256Hex(k), { keyId: `config-${i + 1}`, limits: UNLIMITED, models: null }] as const),
    );
  }

  verify(presentedKey: string, hash = sha256Hex(presentedKey)): Principal | null {
    return this.byHash.get(hash) ?? null;
  }

  /** For a configured key's id: whether a key of that id is still configured; other ids are not this one's. */
  stillUsable(keyId: string): boolean | undefined {
    if (!keyId.startsWith("config-")) return undefined;
    for (const p of this.byHash.values()) if (p.keyId === keyId) return true;
    return false;
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
