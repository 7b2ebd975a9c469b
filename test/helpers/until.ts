/**
 * Polls `fn` every 25 ms until it gives something other than undefined or false (true counts), or fails after
 * `ms`; resolves with that value.
 */
export async function until<V>(
  what: string,
  fn: () => V | undefined | false | Promise<V | undefined | false>,
  ms = 20_000,
): Promise<V> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
