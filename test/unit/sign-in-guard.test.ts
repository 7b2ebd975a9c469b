import assert from "node:assert/strict";
import { test } from "node:test";
import { addressKey, SignInGuard } from "../../src/server/sign-in-guard.js";

test("addressKey: IPv4 as it is, IPv4-mapped IPv6 as IPv4, IPv6 by its /64", () => {
  assert.equal(addressKey("203.0.113.9"), "203.0.113.9");
  assert.equal(addressKey("::ffff:203.0.113.9"), "203.0.113.9");
  assert.equal(addressKey("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
  assert.equal(addressKey("2001:0db8:0001:0002::1"), "2001:db8:1:2::/64");
  assert.equal(addressKey("2001:db8::1"), "2001:db8:0:0::/64");
  assert.equal(addressKey("::1"), "0:0:0:0::/64");
  assert.equal(addressKey("fe80::1%eth0"), "fe80:0:0:0::/64");
});

test("SignInGuard: locks after the failures, for the lock's time; a success clears; the map stays bounded", () => {
  let now = 1_000_000;
  const guard = new SignInGuard({ maxFailures: 3, windowMs: 60_000, lockMs: 30_000 }, () => now);
  guard.fail("a");
  guard.fail("a");
  assert.equal(guard.lockedFor("a"), 0);
  guard.succeed("a");
  for (let i = 0; i < 3; i++) guard.fail("a");
  assert.equal(guard.lockedFor("a"), 30);
  now += 29_000;
  assert.equal(guard.lockedFor("a"), 1);
  now += 1_000;
  assert.equal(guard.lockedFor("a"), 0);
  // A flood from many addresses: the map is cut back instead of growing, and the newest are kept.
  for (let i = 0; i < 25_000; i++) guard.fail(`flood-${i}`);
  const tracked = (guard as unknown as { failures: Map<string, unknown> }).failures;
  assert.ok(tracked.size <= 10_000, `${tracked.size} addresses followed`);
  assert.ok(tracked.has("flood-24999"));
});
