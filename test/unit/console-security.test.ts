import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { describe, test } from "node:test";
import { pino } from "pino";
import { SignInGuard } from "../../src/server/sign-in-guard.js";
import { PAGES } from "../../src/server/console/pages.js";
import { assertError, setup } from "../helpers/fake-engine.js";
import { ADMIN_TOKEN, Browser, consoleApp } from "../helpers/console.js";

const REQUEST = { name: "Ada", contact: "ada@example.org", purpose: "tests" };
const CONSOLE_PATHS = [
  ...Object.keys(PAGES),
  "/assets/visitor.js",
  "/console/api/info",
  "/console/api/csrf",
  "/console/api/session",
  "/console/api/keys",
];

describe("console security", () => {
  test("CSRF: a state-changing request without the token, with a wrong one, or from another origin is a 403", async (t) => {
    const { app, store } = consoleApp(t);
    const visitor = new Browser(app);
    const count = () => store.database.prepare("SELECT COUNT(*) AS n FROM access_requests").get() as { n: number };
    // No token at all: what a form on another site posting here would send (the browser keeps the cookies).
    assertError(await visitor.post("/console/api/access-requests", REQUEST, { csrf: false }), 403, "permission_error");
    assertError(
      await visitor.post("/console/api/access-requests", REQUEST, {
        csrf: false,
        headers: { "x-csrf-token": "forged" },
      }),
      403,
      "permission_error",
    );
    // A valid token, but the request comes from another origin's page.
    assertError(
      await visitor.post("/console/api/access-requests", REQUEST, { headers: { origin: "https://evil.example" } }),
      403,
      "permission_error",
    );
    assert.equal(count().n, 0, "nothing was stored");
    // The operator's routes are guarded the same way: a signed-in operator's cookie alone cannot create a key.
    const operator = new Browser(app);
    await operator.signIn();
    assertError(await operator.post("/console/api/keys", { name: "x" }, { csrf: false }), 403, "permission_error");
    assert.equal(store.list().length, 0);
    // The same requests with the page's token and its own origin pass.
    assert.equal(
      (await visitor.post("/console/api/access-requests", REQUEST, { headers: { origin: "http://localhost:80" } }))
        .statusCode,
      201,
    );
  });

  test("a wrong admin token 20 times: locked out after 5 (the right one too), and the log never holds a token", async (t) => {
    const lines: string[] = [];
    const log = pino(
      { level: "info" },
      new Writable({
        write(chunk: Buffer, _enc, done) {
          lines.push(chunk.toString());
          done();
        },
      }),
    );
    const { app } = consoleApp(t, {
      log,
      guard: new SignInGuard({ maxFailures: 5, windowMs: 60_000, lockMs: 60_000 }),
    });
    const attacker = new Browser(app, "192.0.2.66");
    const statuses: number[] = [];
    for (let i = 0; i < 20; i++) {
      const res = await attacker.signIn(`wrong-token-${i}-secret`);
      statuses.push(res.statusCode);
      assert.equal(attacker.cookie("lucena_console"), undefined);
    }
    assert.deepEqual(statuses, [...Array<number>(5).fill(401), ...Array<number>(15).fill(429)]);
    const locked = await attacker.signIn(ADMIN_TOKEN);
    assertError(locked, 429, "rate_limit_error");
    assert.ok(Number(locked.headers["retry-after"]) > 0);
    assert.equal(attacker.cookie("lucena_console"), undefined);
    // Another address is not locked out by this one.
    assert.equal((await new Browser(app, "192.0.2.1").signIn()).statusCode, 200);
    const log_ = lines.join("");
    assert.match(log_, /console sign-in failed/);
    assert.ok(!/wrong-token|secret/.test(log_), "no presented token in the log");
    assert.ok(!log_.includes(ADMIN_TOKEN), "no admin token in the log");
  });

  test("the admin API and the console's sign-in share one lockout per address", async (t) => {
    const { app } = consoleApp(t, { adminApi: true });
    const admin = (token: string, address: string) =>
      app.inject({ url: "/admin/v1/keys", remoteAddress: address, headers: { authorization: `Bearer ${token}` } });
    for (let i = 0; i < 5; i++) assertError(await admin(`guess-${i}`, "192.0.2.70"), 401, "gateway_auth_error");
    assertError(await admin(ADMIN_TOKEN, "192.0.2.70"), 429, "rate_limit_error");
    assertError(await new Browser(app, "192.0.2.70").signIn(), 429, "rate_limit_error");
    assert.equal((await admin(ADMIN_TOKEN, "192.0.2.71")).statusCode, 200, "another address is not locked out");
    // Guesses made through the console lock the admin API out as well.
    const console_ = new Browser(app, "192.0.2.72");
    for (let i = 0; i < 5; i++) await console_.signIn(`guess-${i}`);
    assertError(await admin(ADMIN_TOKEN, "192.0.2.72"), 429, "rate_limit_error");
  });

  test("an IPv6 client counts by its /64: stepping through addresses gains nothing", async (t) => {
    const { app } = consoleApp(t, { perHour: 2 });
    const from = (address: string) => new Browser(app, address).post("/console/api/access-requests", REQUEST);
    assert.equal((await from("2001:db8:1:2::1")).statusCode, 201);
    assert.equal((await from("2001:db8:1:2:ffff:ffff:ffff:ffff")).statusCode, 201);
    assertError(await from("2001:0db8:0001:0002::abcd"), 429, "rate_limit_error");
    assert.equal((await from("2001:db8:1:3::1")).statusCode, 201, "the next /64 is another subscriber");
  });

  test("the session cookie is HttpOnly and SameSite=Strict; operator routes need it; sign-out ends it", async (t) => {
    const { app } = consoleApp(t);
    const operator = new Browser(app);
    for (const url of ["/console/api/keys", "/console/api/requests", "/console/api/usage", "/console/api/live"]) {
      assertError(await operator.request({ url }), 401, "gateway_auth_error");
    }
    const signedIn = await operator.signIn();
    const cookie = String(signedIn.headers["set-cookie"])
      .split(/,(?=\s*\w+=)/)
      .find((c) => c.includes("lucena_console="));
    assert.ok(cookie, "a session cookie is set");
    assert.match(cookie, /HttpOnly/i);
    assert.match(cookie, /SameSite=Strict/i);
    assert.doesNotMatch(cookie, /Secure/i, "not Secure over plain HTTP");
    assert.equal((await operator.request({ url: "/console/api/keys" })).statusCode, 200);
    assert.equal((await operator.json("/console/api/session")).signed_in, true);
    await operator.request({ method: "DELETE", url: "/console/api/session" });
    assertError(await operator.request({ url: "/console/api/keys" }), 401, "gateway_auth_error");
  });

  test("behind a trusted proxy: visitors are counted by X-Forwarded-For, and HTTPS makes the cookies Secure", async (t) => {
    const { app } = consoleApp(t, { trustProxy: "127.0.0.1", perHour: 1 });
    const via = (address: string) => ({ "x-forwarded-for": address, "x-forwarded-proto": "https" });
    const visitor = new Browser(app, "127.0.0.1");
    const first = await visitor.post("/console/api/access-requests", REQUEST, { headers: via("203.0.113.1") });
    assert.equal(first.statusCode, 201);
    const second = await visitor.post("/console/api/access-requests", REQUEST, { headers: via("203.0.113.2") });
    assert.equal(second.statusCode, 201, "another visitor behind the same proxy");
    assertError(
      await visitor.post("/console/api/access-requests", REQUEST, { headers: via("203.0.113.1") }),
      429,
      "rate_limit_error",
    );
    const signedIn = await visitor.post(
      "/console/api/session",
      { token: ADMIN_TOKEN },
      { headers: via("203.0.113.3") },
    );
    assert.equal(signedIn.statusCode, 200);
    assert.match(String(signedIn.headers["set-cookie"]), /lucena_console=[^;]+;.*Secure/i);
    // An untrusted peer's X-Forwarded-For is not believed: both requests count against its own address.
    const direct = new Browser(app, "192.0.2.9");
    assert.equal(
      (await direct.post("/console/api/access-requests", REQUEST, { headers: via("203.0.113.7") })).statusCode,
      201,
    );
    assertError(
      await direct.post("/console/api/access-requests", REQUEST, { headers: via("203.0.113.8") }),
      429,
      "rate_limit_error",
    );
  });

  test("without an admin token nobody signs in, the page is told why, and access requests are closed", async (t) => {
    const { app } = consoleApp(t, { adminToken: null });
    const operator = new Browser(app);
    assert.deepEqual(await operator.json("/console/api/session"), { signed_in: false, admin_configured: false });
    assertError(await operator.signIn(""), 401, "gateway_auth_error");
    // Nobody could decide a request: the form is closed, and says so.
    assert.equal((await operator.json("/console/api/info")).access_requests_open, false);
    assertError(await operator.post("/console/api/access-requests", REQUEST), 403, "permission_error");
  });

  test("console pages: a strict Content-Security-Policy, no framing, no referrer; off the API's CORS rules", async (t) => {
    const { app } = consoleApp(t, { corsOrigins: ["https://app.example"] });
    const origin = { origin: "https://app.example" };
    for (const url of Object.keys(PAGES)) {
      const res = await app.inject({ url, headers: origin });
      assert.equal(res.statusCode, 200, `${url}: ${res.body}`);
      assert.match(String(res.headers["content-type"]), /^text\/html/);
      const csp = String(res.headers["content-security-policy"]);
      assert.match(csp, /script-src 'self'/);
      assert.match(csp, /frame-ancestors 'none'/);
      assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
      assert.equal(res.headers["referrer-policy"], "no-referrer");
      assert.equal(res.headers["access-control-allow-origin"], undefined, `${url} has no CORS header`);
    }
    const api = await app.inject({ url: "/console/api/info", headers: origin });
    assert.equal(api.headers["access-control-allow-origin"], undefined);
    // A preflight for a console route is answered without CORS headers: the browser sends nothing after it.
    const preflight = (url: string) =>
      app.inject({ method: "OPTIONS", url, headers: { ...origin, "access-control-request-method": "POST" } });
    const refused = await preflight("/console/api/access-requests");
    assert.equal(refused.headers["access-control-allow-origin"], undefined);
    assert.equal(refused.headers["access-control-allow-methods"], undefined);
    assert.equal(
      (await preflight("/v1/chat/completions")).headers["access-control-allow-origin"],
      "https://app.example",
    );
    // The API keeps its CORS rules.
    const models = await app.inject({ url: "/v1/models", headers: { ...origin, authorization: "Bearer x" } });
    assert.equal(models.headers["access-control-allow-origin"], "https://app.example");
  });

  test("console off: every console path answers the API's 404", async (t) => {
    const { app } = setup(t);
    for (const url of CONSOLE_PATHS) {
      assertError(await app.inject({ url }), 404, "not_found", { message: "Not found." });
    }
    assertError(
      await app.inject({ method: "POST", url: "/console/api/access-requests", payload: REQUEST }),
      404,
      "not_found",
    );
  });
});
