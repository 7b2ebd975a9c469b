/** How long `until` polls before giving up: a guard against a hang, far above anything a test waits for. */
export const UNTIL_LIMIT_MS = 120_000;

/**
 * Polls `fn` every 20 ms until it gives something other than undefined, null or false (true counts); resolves
 * with that value. Tests wait for what happens, never for a time: the limit only turns a hang into a failure
 * that names what never came.
 */
export async function until<V>(
  what: string,
  fn: () => V | undefined | null | false | Promise<V | undefined | null | false>,
): Promise<V> {
  const end = Date.now() + UNTIL_LIMIT_MS;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== null && v !== false) return v;
    if (Date.now() > end) throw new Error(`${what}: never came (polled for ${UNTIL_LIMIT_MS / 1000} s)`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
