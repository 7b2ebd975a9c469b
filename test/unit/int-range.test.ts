import assert from "node:assert/strict";
import { test } from "node:test";
import { digitRange } from "../../src/structured/int-range.js";
import { intRange } from "../../src/structured/json-grammar.js";
import { rng } from "../helpers/rng.js";

/** The expression as a regular expression: it uses only literals, digit classes, groups and counted repeats. */
function asRegExp(expr: string): RegExp {
  return new RegExp(`^(?:${expr.replace(/"([^"]*)"/g, "$1").replace(/ /g, "")})$`);
}

function check(lo: number, hi: number, expr: string, window: number[]): void {
  const re = asRegExp(expr);
  for (const n of window) {
    assert.equal(re.test(String(n)), n >= lo && n <= hi, `${n} in ${lo}…${hi}: ${expr}`);
  }
  assert.equal(re.test(`0${Math.max(lo, 1)}`), false, "no leading zeros");
  assert.equal(re.test("-0"), false, "never -0");
}

test("digitRange matches exactly lo…hi for every pair below 1200", () => {
  const window = Array.from({ length: 1300 }, (_, i) => i);
  for (let lo = 0; lo < 1200; lo += 7) {
    for (let hi = lo; hi < 1200; hi += 13) check(lo, hi, digitRange(lo, hi), window);
  }
});

test("digitRange on random wide ranges: the bounds, their neighbours and random numbers", () => {
  const next = rng(42);
  for (let i = 0; i < 300; i++) {
    const a = Math.floor(next() * 10 ** (1 + Math.floor(next() * 14)));
    const b = Math.floor(next() * 10 ** (1 + Math.floor(next() * 14)));
    const [lo, hi] = a <= b ? [a, b] : [b, a];
    const probe = [lo - 1, lo, lo + 1, hi - 1, hi, hi + 1, 0, 10 ** 15 - 1].filter((n) => n >= 0);
    for (let k = 0; k < 50; k++) probe.push(Math.floor(next() * 10 ** (1 + Math.floor(next() * 15))));
    check(lo, hi, digitRange(lo, hi), probe);
  }
});

test("intRange spans negative bounds without -0", () => {
  const window = Array.from({ length: 401 }, (_, i) => i - 200);
  for (const [lo, hi] of [
    [-150, -3],
    [-17, 0],
    [-1, 1],
    [-99, 150],
    [0, 0],
    [-5, -5],
  ] as const) {
    const re = asRegExp(intRange({ lo, hi }));
    for (const n of window) assert.equal(re.test(String(n)), n >= lo && n <= hi, `${n} in ${lo}…${hi}`);
    assert.equal(re.test("-0"), false);
  }
});
