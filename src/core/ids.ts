import { createHash, randomBytes, randomFillSync } from "node:crypto";

/** Ids, secrets and hashes: request and completion ids, API key secrets, the SHA-256 keys are kept as. */

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/**
 * Random bytes from the CSPRNG, drawn 4 KiB at a time: every request takes an id or two, and one call per id
 * showed in profiles of the cheap routes (7% of /v1/models).
 */
const pool = Buffer.alloc(4096);
let poolAt = pool.length;
function randomByte(): number {
  if (poolAt === pool.length) {
    randomFillSync(pool);
    poolAt = 0;
  }
  return pool[poolAt++]!; // poolAt < pool.length: the pool was refilled above when it ran out
}

/** Random base62 text with `n` characters (rejection sampling keeps every character equally likely). */
export function base62(n: number, nextByte: () => number = randomByte): string {
  let out = "";
  while (out.length < n) {
    const b = nextByte();
    if (b < 248) out += BASE62[b % 62];
  }
  return out;
}

/** {@link base62} from bytes drawn for it alone, never kept in the shared pool: for secrets (API keys). */
export function secretBase62(n: number): string {
  let bytes = randomBytes(n * 2);
  let i = 0;
  return base62(n, () => {
    if (i === bytes.length) [bytes, i] = [randomBytes(n), 0];
    return bytes[i++]!; // i < bytes.length: refilled above when it ran out
  });
}

export function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}
