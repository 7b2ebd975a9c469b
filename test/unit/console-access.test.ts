import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { assertError, chat, TEST_MODEL, USER_HELLO } from "../helpers/fake-engine.js";
import { Browser, consoleApp } from "../helpers/console.js";

const REQUEST = { name: "Ada", contact: "ada@example.org", purpose: "Code review bot" };

/** The access requests the store holds (every status). */
function storedRequests(store: { database: { prepare(sql: string): { all(): unknown[] } } }) {
  return store.database.prepare("SELECT * FROM access_requests").all() as Array<Record<string, unknown>>;
}

describe("access requests: a visitor asks, the operator decides, the link shows the key once", () => {
  test("approved with rpm 5: the key is revealed once, works with its limit, and is then only 'already shown'", async (t) => {
    const { app, store } = consoleApp(t);
    const visitor = new Browser(app, "203.0.113.7");
    const created = await visitor.post("/console/api/access-requests", REQUEST);
    assert.equal(created.statusCode, 201, created.body);
    const { token, status_path, status } = created.json();
    assert.equal(status, "pending");
    assert.equal(status_path, `/access#${token}`);
    assert.match(token, /^[A-Za-z0-9]{43}$/);
    // Stored pending, with the token's hash only.
    const [row] = storedRequests(store);
    assert.equal(row.status, "pending");
    assert.equal(row.address, "203.0.113.7");
    assert.ok(!JSON.stringify(row).includes(token), "the token itself is not stored");

    const statusOf = async () => (await visitor.post("/console/api/access-requests/status", { token })).json();
    assert.equal((await statusOf()).status, "pending");
    assertError(await visitor.post("/console/api/access-requests/key", { token }), 409, "conflict");

    const operator = new Browser(app);
    assert.equal((await operator.signIn()).statusCode, 200);
    const pending = await operator.json("/console/api/requests?status=pending");
    const [listed] = pending.data as Array<{ id: string; name: string; status: string }>;
    assert.equal(listed.name, "Ada");
    const approved = await operator.post(`/console/api/requests/${listed.id}/approve`, { rpm: 5, expires: "30d" });
    assert.equal(approved.statusCode, 200, approved.body);
    assert.equal(approved.json().limits.rpm, 5);
    assert.equal(store.list().length, 0, "no key exists before the visitor reveals it");
    assert.equal((await statusOf()).status, "approved");

    const revealed = await visitor.post("/console/api/access-requests/key", { token });
    assert.equal(revealed.statusCode, 200, revealed.body);
    const { key, rpm, key_id } = revealed.json();
    assert.match(key, /^sk-lucena-[A-Za-z0-9]{43}$/);
    assert.equal(rpm, 5);
    assert.equal(store.get(key_id)!.name, "Ada");
    assert.ok(!JSON.stringify(store.database.prepare("SELECT * FROM keys").all()).includes(key), "hashed at rest");

    const answered = await chat(
      app,
      { model: TEST_MODEL.id, messages: USER_HELLO },
      { authorization: `Bearer ${key}` },
    );
    assert.equal(answered.statusCode, 200);
    assert.equal(answered.headers["x-ratelimit-limit-requests"], "5");

    assertError(await visitor.post("/console/api/access-requests/key", { token }), 409, "conflict", {
      message: "The key was already shown once and cannot be shown again.",
    });
    assert.equal((await statusOf()).status, "issued");
    assert.equal(store.list().length, 1, "one key, however often the link is used");
  });

  test("rejected: the link says so and has no key; a decided request cannot be decided again", async (t) => {
    const { app, store } = consoleApp(t);
    const visitor = new Browser(app);
    const { token } = (await visitor.post("/console/api/access-requests", REQUEST)).json();
    const operator = new Browser(app);
    await operator.signIn();
    const [{ id }] = (await operator.json("/console/api/requests")).data as Array<{ id: string }>;
    assert.equal((await operator.post(`/console/api/requests/${id}/reject`)).json().status, "rejected");
    assertError(await operator.post(`/console/api/requests/${id}/approve`, {}), 409, "conflict");
    assert.equal((await visitor.post("/console/api/access-requests/status", { token })).json().status, "rejected");
    assertError(await visitor.post("/console/api/access-requests/key", { token }), 409, "conflict");
    assert.equal(store.list().length, 0);
  });

  test("an unknown link is a 404; approving with a bad limit or an unknown model is a 400 naming it", async (t) => {
    const { app } = consoleApp(t);
    const visitor = new Browser(app);
    assertError(await visitor.post("/console/api/access-requests/status", { token: "x".repeat(43) }), 404, "not_found");
    await visitor.post("/console/api/access-requests", REQUEST);
    const operator = new Browser(app);
    await operator.signIn();
    const [{ id }] = (await operator.json("/console/api/requests")).data as Array<{ id: string }>;
    assertError(await operator.post(`/console/api/requests/${id}/approve`, { rpm: 0 }), 400, "invalid_request_error", {
      param: "rpm",
    });
    assertError(
      await operator.post(`/console/api/requests/${id}/approve`, { models: "nope" }),
      400,
      "invalid_request_error",
      {
        param: "models",
      },
    );
    assertError(
      await operator.post(`/console/api/requests/${id}/approve`, { expires: "90" }),
      400,
      "invalid_request_error",
      {
        param: "expires",
      },
    );
    const [still] = (await operator.json("/console/api/requests")).data as Array<{ status: string }>;
    assert.equal(still.status, "pending", "a refused approval changes nothing");
  });
});

describe("access requests: decisions", () => {
  test("an approval is withdrawn by rejecting it before the key is revealed; an expired approval shows no key", async (t) => {
    const { app, store } = consoleApp(t);
    const visitor = new Browser(app);
    const first = (await visitor.post("/console/api/access-requests", REQUEST)).json().token as string;
    const second = (await visitor.post("/console/api/access-requests", { ...REQUEST, name: "Bob" })).json()
      .token as string;
    const operator = new Browser(app);
    await operator.signIn();
    const ids = Object.fromEntries(
      ((await operator.json("/console/api/requests")).data as Array<{ id: string; name: string }>).map((r) => [
        r.name,
        r.id,
      ]),
    );
    for (const id of Object.values(ids)) {
      assert.equal((await operator.post(`/console/api/requests/${id}/approve`, { expires: "1d" })).statusCode, 200);
    }
    assert.equal((await operator.post(`/console/api/requests/${ids.Ada}/reject`)).json().status, "rejected");
    assertError(await visitor.post("/console/api/access-requests/key", { token: first }), 409, "conflict");
    // Bob's approval expires before he reveals it (the clock moved on: its expiry is set in the past).
    store.database.prepare("UPDATE access_requests SET expires_at = ? WHERE id = ?").run(Date.now() - 1000, ids.Bob);
    assertError(await visitor.post("/console/api/access-requests/key", { token: second }), 409, "conflict", {
      message: /expired/,
    });
    assert.equal(store.list().length, 0, "no key was made");
  });

  test("every pending request is listed, however many decided ones are newer", async (t) => {
    const { app, store } = consoleApp(t);
    const visitor = new Browser(app);
    await visitor.post("/console/api/access-requests", { ...REQUEST, name: "Oldest pending" });
    const insert = store.database.prepare(
      `INSERT INTO access_requests (id, token_hash, name, contact, purpose, address, status, created_at, decided_at)
       VALUES (?, ?, 'decided', 'c', 'p', 'a', 'rejected', ?, ?)`,
    );
    const now = Date.now();
    for (let i = 0; i < 600; i++) insert.run(`req_d${i}`, `hash${i}`, now + 1000 + i, now + 1000 + i);
    const operator = new Browser(app);
    await operator.signIn();
    const all = (await operator.json("/console/api/requests?status=all")).data as Array<{
      name: string;
      status: string;
    }>;
    assert.equal(all.filter((r) => r.status === "pending").length, 1);
    assert.equal(all.at(-1)!.name, "Oldest pending", "newest first");
    assert.equal(all.filter((r) => r.status === "rejected").length, 500, "the latest 500 decided ones");
  });
});

describe("access requests: the spam guard", () => {
  test("per-address limit: the (n+1)th request in an hour is a 429 with Retry-After; another address still may", async (t) => {
    const { app, store } = consoleApp(t, { perHour: 2 });
    const spammer = new Browser(app, "198.51.100.1");
    for (let i = 0; i < 2; i++)
      assert.equal((await spammer.post("/console/api/access-requests", REQUEST)).statusCode, 201);
    const refused = await spammer.post("/console/api/access-requests", REQUEST);
    assertError(refused, 429, "rate_limit_error");
    assert.ok(Number(refused.headers["retry-after"]) > 0);
    assert.equal(storedRequests(store).length, 2);
    const other = new Browser(app, "198.51.100.2");
    assert.equal((await other.post("/console/api/access-requests", REQUEST)).statusCode, 201);
  });

  test("every field has a size limit and must not be blank; nothing is stored", async (t) => {
    const { app, store } = consoleApp(t);
    const visitor = new Browser(app);
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ ...REQUEST, name: "n".repeat(101) }, "name"],
      [{ ...REQUEST, contact: "c".repeat(201) }, "contact"],
      [{ ...REQUEST, purpose: "p".repeat(2001) }, "purpose"],
      [{ ...REQUEST, name: "   " }, "name"],
      [{ name: "Ada", contact: "ada@example.org" }, "purpose"],
    ];
    for (const [body, param] of cases) {
      assertError(await visitor.post("/console/api/access-requests", body), 400, "invalid_request_error", { param });
    }
    assert.equal(storedRequests(store).length, 0);
  });

  test("access_requests: false closes the form (403) and the page says so", async (t) => {
    const { app, store } = consoleApp(t, { open: false });
    const visitor = new Browser(app);
    assert.equal((await visitor.json("/console/api/info")).access_requests_open, false);
    assertError(await visitor.post("/console/api/access-requests", REQUEST), 403, "permission_error");
    assert.equal(storedRequests(store).length, 0);
  });
});
