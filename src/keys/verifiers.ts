import { sha256Hex } from "../core/ids.js";
import type { KeyVerifier, Principal } from "../core/principal.js";

const UNLIMITED: Principal["limits"] = { rpm: null, tpm: null, concurrency: null };

/** Keys from configuration (`LUCENA_API_KEYS`, `api_keys`), held only as hashes. */
export class StaticKeys implements KeyVerifier {
  private readonly byHash = new Map<string, Principal>();

  constructor(keys: readonly string[]) {
    keys.forEach((k, i) =>
      this.byHash.set(sha256Hex(k), { keyId: `config-${i + 1}`, limits: UNLIMITED, models: null }),
    );
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
