/** Inclusive bounds of a range of integers. */
export interface IntBounds {
  lo: number;
  hi: number;
}

/**
 * A grammar expression (GBNF) for the decimal numerals of lo…hi, 0 ≤ lo ≤ hi, without leading zeros: the range
 * split into runs of equal length, each written digit by digit (the common prefix, then the first digit's low
 * end, middle and high end). Only literals, digit classes, groups and counted repetitions: the same text reads as
 * a regular expression once its quotes are dropped, which is how it is tested.
 */
export function digitRange(lo: number, hi: number): string {
  if (!Number.isSafeInteger(lo) || !Number.isSafeInteger(hi) || lo < 0 || hi < lo) {
    throw new Error(`bad digit range ${lo}…${hi}`);
  }
  const alternatives: string[] = [];
  let from = lo;
  for (let digits = String(lo).length; digits <= String(hi).length; digits++) {
    const top = Math.min(hi, 10 ** digits - 1);
    alternatives.push(sameLength(String(from), String(top)));
    from = 10 ** digits;
  }
  return alternatives.join(" | ");
}

/** Numerals of equal length a…b (a ≤ b), as a sequence. */
function sameLength(a: string, b: string): string {
  if (a.length === 0) return "";
  if (a === b) return `"${a}"`;
  let common = 0;
  while (a[common] === b[common]) common++;
  const head = common > 0 ? `"${a.slice(0, common)}" ` : "";
  const x = Number(a[common]);
  const y = Number(b[common]);
  const restA = a.slice(common + 1);
  const restB = b.slice(common + 1);
  const n = restA.length;
  if (n === 0) return `${head}[${x}-${y}]`;
  const zeros = "0".repeat(n);
  const nines = "9".repeat(n);
  const alts: string[] = [];
  // The low end: x followed by restA…99…9 (all of them when restA is 00…0, merged with the middle).
  let midFrom = x + 1;
  if (restA === zeros) midFrom = x;
  else alts.push(`"${x}" (${sameLength(restA, nines)})`);
  // The high end: y followed by 00…0…restB (all of them when restB is 99…9, merged with the middle).
  let midTo = y - 1;
  const high = restB === nines ? null : `"${y}" (${sameLength(zeros, restB)})`;
  if (high === null) midTo = y;
  if (midFrom <= midTo) alts.push(`${digitClass(midFrom, midTo)} [0-9]{${n}}`);
  if (high !== null) alts.push(high);
  return `${head}(${alts.join(" | ")})`;
}

function digitClass(from: number, to: number): string {
  return from === to ? `"${from}"` : `[${from}-${to}]`;
}
