import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import Database from "better-sqlite3";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { chromium, type Browser, type BrowserContext, type Page } from "playwright-core";
import { testModel } from "../helpers/models.js";
import { repoRoot } from "../helpers/paths.js";
import { startServer, type RunningServer } from "../helpers/server.js";
import { until, UNTIL_LIMIT_MS } from "../helpers/until.js";

/** Debian's Chromium (.ci/run installs it when missing); playwright-core drives it and never downloads one. */
const CHROMIUM = process.env.LUCENA_CHROMIUM ?? "/usr/bin/chromium";
const NO_BROWSER = existsSync(CHROMIUM)
  ? false
  : `no Chromium at ${CHROMIUM}: install Debian's chromium package (.ci/run does) or set LUCENA_CHROMIUM`;
export const SCREENSHOTS = join(repoRoot, "dist", "test-artifacts", "screenshots");
const ADMIN_TOKEN = "console-browser-test-admin-token";
const VIEWPORT = { width: 1280, height: 900 };
/** A name that would run script if it were ever rendered as HTML. */
const XSS_NAME = "<img src=x onerror=alert(1)>";

/**
 * The console in real headless Chromium against the real server (real engine, real key store): a visitor asks
 * for access, the operator approves with rpm 5, the visitor's link shows the key once, the playground streams
 * with it and stops an answer, the operator's usage shows the tokens, a revoked key gets the 401 message. Each
 * page is saved as a screenshot (dist/test-artifacts/screenshots).
 */
describe("the web console in a real browser", { skip: NO_BROWSER }, () => {
  let server: RunningServer;
  let browser: Browser;
  const problems: string[] = [];

  before(async () => {
    mkdirSync(SCREENSHOTS, { recursive: true });
    server = await startServer({
      noConfigKey: true,
      config: {
        admin_token: ADMIN_TOKEN,
        models: [
          {
            id: "lucena-coder-latest",
            source: testModel(),
            default_max_tokens: 24,
            context_size: 8192,
            // A long answer, for the stop button: far more than the time between two clicks.
            shapes: { long: { system_prompt: "Write at length.", max_tokens: 8000 } },
          },
        ],
      },
    });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      // Background networking off: this machine's network is closed, and Chromium's own calls would only fail.
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
      ],
    });
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
  });

  /** A page that fails the test on any script dialog (an XSS would open one) or CSP violation. */
  async function open(path: string, context?: BrowserContext): Promise<Page> {
    const page = await (context ?? (await browser.newContext({ viewport: VIEWPORT }))).newPage();
    page.setDefaultTimeout(UNTIL_LIMIT_MS);
    page.on("dialog", (d) => {
      problems.push(`dialog: ${d.message()}`);
      void d.dismiss();
    });
    page.on("console", (m) => {
      if (m.type() === "error" && /Content.Security.Policy|Refused to/i.test(m.text())) problems.push(m.text());
    });
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    await page.goto(`${server.url}${path}`);
    return page;
  }

  const shot = (page: Page, name: string) =>
    page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });

  /** The usage ledger's rows of one key, from the server's SQLite file. */
  function ledger(keyId: string): Array<{ prompt_tokens: number; completion_tokens: number; status: number }> {
    const db = new Database(join(server.dataDir, "lucena.db"), { readonly: true });
    try {
      return db
        .prepare("SELECT prompt_tokens, completion_tokens, status FROM usage WHERE key_id = ? ORDER BY id")
        .all(keyId) as Array<{ prompt_tokens: number; completion_tokens: number; status: number }>;
    } finally {
      db.close();
    }
  }

  test("request → approve (rpm 5) → key shown once → playground streams and stops → usage → revoke → 401", async () => {
    // The visitor's page: what the server is, with the real base URL, and the form.
    const visitor = await open("/");
    await visitor.getByTestId("models").getByText("lucena-coder-latest").first().waitFor();
    assert.equal((await visitor.getByTestId("base-url").textContent())?.trim(), server.url);
    assert.ok((await visitor.getByTestId("curl-snippet").textContent())?.includes(`${server.url}/v1/chat/completions`));
    assert.ok((await visitor.getByTestId("openai-snippet").textContent())?.includes(server.url));
    await shot(visitor, "request-page");
    const form = visitor.getByTestId("request-form");
    await form.locator("input[name=name]").fill(XSS_NAME);
    await form.locator("input[name=contact]").fill("ada@example.org");
    await form.locator("textarea[name=purpose]").fill("A code review bot for our team.");
    await visitor.getByTestId("request-submit").click();
    const statusLink = (await visitor.getByTestId("status-link").getAttribute("href"))!;
    assert.match(statusLink, /\/access#[A-Za-z0-9]{43}$/);
    await shot(visitor, "request-sent");

    const access = await open(new URL(statusLink, server.url).pathname + new URL(statusLink, server.url).hash);
    await access.locator("[data-testid=access-status][data-status=pending]").waitFor();

    // The operator signs in, sees the request's name as text, and approves it with rpm 5.
    const operator = await open("/console");
    await operator.getByTestId("signin-form").locator("input[name=token]").fill(ADMIN_TOKEN);
    await operator.getByTestId("signin-submit").click();
    await operator.getByTestId("tab-requests").click();
    const row = operator.locator("[data-testid=request-row][data-status=pending]").first();
    assert.equal(await row.getByTestId("request-name").textContent(), XSS_NAME, "the name is shown as text");
    assert.equal(await operator.locator("img[src=x]").count(), 0, "no element was made from the name");
    await row.locator("input[name=rpm]").fill("5");
    await shot(operator, "console-requests");
    await row.getByTestId("approve").click();
    await operator.locator("[data-testid=request-row][data-status=approved]").first().waitFor();

    // The visitor's link shows the key once; a reload shows it no more.
    await access.reload();
    await access.getByTestId("reveal-key").click();
    const key = (await access.getByTestId("issued-key").textContent())!.trim();
    assert.match(key, /^sk-lucena-[A-Za-z0-9]{43}$/);
    await shot(access, "access-key-shown");
    await access.reload();
    await access.locator("[data-testid=access-status][data-status=issued]").waitFor();
    assert.equal(await access.getByTestId("issued-key").count(), 0);
    assert.ok(!(await access.content()).includes(key), "the key is not in the page any more");

    // The playground streams an answer with that key: usage and time to first token per answer.
    const playground = await open("/playground");
    await playground.getByTestId("pg-key").fill(key);
    await playground.getByTestId("pg-key-save").click();
    await playground.locator("[data-testid=pg-model] option[value=lucena-coder-latest]").waitFor({ state: "attached" });
    await playground.getByTestId("pg-input").fill("Write a haiku about caching.");
    await playground.getByTestId("pg-send").click();
    const first = playground.locator("[data-testid=pg-message][data-role=assistant]").nth(0);
    await first.and(playground.locator("[data-state=done]")).waitFor();
    const stats = first.getByTestId("pg-stats");
    const completionTokens = Number(await stats.getAttribute("data-completion-tokens"));
    assert.ok(completionTokens > 0 && completionTokens <= 24, `completion tokens: ${completionTokens}`);
    assert.ok(Number(await stats.getAttribute("data-prompt-tokens")) > 0);
    assert.ok(Number(await stats.getAttribute("data-ttft-ms")) >= 0);
    assert.ok(!playground.url().includes(key), "the key is never in the URL");
    await shot(playground, "playground");

    // A long answer, stopped mid-stream: the page says so and the server ends the generation (a 499 row).
    await playground.getByTestId("pg-shape").selectOption("long");
    await playground.getByTestId("pg-input").fill("Tell me everything.");
    await playground.getByTestId("pg-send").click();
    const second = playground.locator("[data-testid=pg-message][data-role=assistant]").nth(1);
    await second.and(playground.locator("[data-state=streaming]")).waitFor();
    await playground.getByTestId("pg-stop").click();
    await second.and(playground.locator("[data-state=stopped]")).waitFor();
    const keyId = (await issuedKeyId(operator, XSS_NAME))!;
    assert.ok(keyId);
    const rows = ledger(keyId);
    assert.equal(rows.length, 2);
    assert.ok(rows[1].completion_tokens < 8000, "the stopped answer did not run to its end");

    // The operator's usage chart and totals show these requests' tokens.
    await operator.getByTestId("tab-usage").click();
    await operator.getByTestId("bucket").selectOption("hour");
    await operator.getByTestId("usage-chart").locator("canvas").first().waitFor();
    const total = rows.reduce((s, r) => s + r.prompt_tokens + r.completion_tokens, 0);
    const keyRow = operator.locator(`[data-testid=usage-by-key] [data-key-id="${keyId}"]`);
    await keyRow.getByTestId("row-total-tokens").getByText(String(total), { exact: true }).waitFor();
    await operator.getByTestId("usage-total-tokens").getByText(String(total), { exact: true }).waitFor();
    await shot(operator, "console-usage");

    await operator.getByTestId("tab-live").click();
    await operator.locator("[data-testid=live-model][data-model-id=lucena-coder-latest]").waitFor();
    await shot(operator, "console-live");

    // The operator revokes the key: the playground shows the 401 message.
    await operator.getByTestId("tab-keys").click();
    const keyLine = operator.locator(`[data-testid=key-row][data-key-id="${keyId}"]`);
    await keyLine.getByTestId("revoke").click();
    await keyLine.getByTestId("revoke").click();
    await operator.locator(`[data-testid=key-row][data-key-id="${keyId}"][data-status=revoked]`).waitFor();
    await shot(operator, "console-keys");
    await playground.getByTestId("pg-input").fill("Still there?");
    await playground.getByTestId("pg-send").click();
    await playground.getByTestId("pg-error").getByText("Invalid API Key").waitFor();
    await shot(playground, "playground-revoked");

    assert.deepEqual(problems, [], "no dialog, script error or CSP violation on any page");
    problems.length = 0;
    const logs = server.logs.join("\n");
    assert.ok(!logs.includes(key), "the key is never logged");
    assert.ok(!logs.includes(ADMIN_TOKEN), "the admin token is never logged");
  });

  test("a CSRF attempt from another origin, with the operator signed in, creates nothing", async () => {
    const context = await browser.newContext({ viewport: VIEWPORT });
    const operator = await open("/console", context);
    await operator.getByTestId("signin-form").locator("input[name=token]").fill(ADMIN_TOKEN);
    await operator.getByTestId("signin-submit").click();
    await operator.getByTestId("tab-keys").waitFor();
    const keysBefore = await keyNames(operator);
    const attacker = await attackerSite(server.url);
    try {
      const evil = await context.newPage();
      const refused = evil.waitForResponse(
        (r) =>
          r.url().endsWith("/console/api/keys") &&
          r.request().method() === "POST" &&
          r.request().postData()?.includes("evil-form") === true,
      );
      await evil.goto(attacker.url);
      // The form's answer is the console's 403 body, shown in the evil page's tab.
      assert.equal((await refused).status(), 403);
      await evil.waitForURL(/\/console\/api\/keys$/);
      assert.match((await evil.textContent("body")) ?? "", /security token/);
    } finally {
      attacker.server.close();
    }
    assert.deepEqual(await keyNames(operator), keysBefore, "no key was made");
    assert.ok(!(await keyNames(operator)).some((n) => n.startsWith("evil")));
    await context.close();
  });

  test("the operator makes a key (shown once), edits its limits, and rejects a request", async () => {
    const context = await browser.newContext({ viewport: VIEWPORT });
    const visitor = await open("/", context);
    const form = visitor.getByTestId("request-form");
    await form.locator("input[name=name]").fill("To be rejected");
    await form.locator("input[name=contact]").fill("nobody@example.org");
    await form.locator("textarea[name=purpose]").fill("Nothing good.");
    await visitor.getByTestId("request-submit").click();
    const link = new URL((await visitor.getByTestId("status-link").getAttribute("href"))!, server.url);

    const operator = await open("/console", context);
    await operator.getByTestId("signin-form").locator("input[name=token]").fill(ADMIN_TOKEN);
    await operator.getByTestId("signin-submit").click();
    await operator.getByTestId("tab-requests").click();
    const row = operator.locator("[data-testid=request-row][data-status=pending]", { hasText: "To be rejected" });
    await row.getByTestId("reject").click();
    await operator.locator("[data-testid=request-row][data-status=rejected]", { hasText: "To be rejected" }).waitFor();
    const access = await open(link.pathname + link.hash, context);
    await access.locator("[data-testid=access-status][data-status=rejected]").waitFor();
    assert.equal(await access.getByTestId("reveal-key").count(), 0);

    await operator.getByTestId("tab-keys").click();
    const create = operator.getByTestId("key-create-form");
    await create.locator("input[name=name]").fill("ci-bot");
    await create.locator("input[name=tpm]").fill("1000");
    await create.locator("button[type=submit]").click();
    const key = (await operator.getByTestId("created-key").textContent())!.trim();
    assert.match(key, /^sk-lucena-[A-Za-z0-9]{43}$/);
    await shot(operator, "console-key-created");
    const id = (await keyList(operator)).find((k) => k.name === "ci-bot")!.id;
    const line = operator.locator(`[data-testid=key-row][data-key-id="${id}"]`);
    await line.locator("input[name=rpm]").fill("9");
    await line.locator("input[name=tpm]").fill("");
    await line.getByTestId("save-limits").click();
    await until("the saved limits", async () => {
      const k = (await keyList(operator)).find((k) => k.id === id)!;
      return k.rpm === 9 && k.tpm === null ? k : undefined;
    });
    // The key answers with its new limit; the page never shows the key again.
    const answered = await fetch(`${server.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({
        model: "lucena-coder-latest",
        messages: [{ role: "user", content: "hi" }],
        max_tokens: 2,
      }),
    });
    assert.equal(answered.status, 200);
    assert.equal(answered.headers.get("x-ratelimit-limit-requests"), "9");
    assert.equal(answered.headers.get("x-ratelimit-limit-tokens"), null, "the cleared tpm is gone");
    await answered.arrayBuffer();
    await operator.reload();
    await operator.getByTestId("tab-keys").click();
    await line.waitFor();
    assert.ok(!(await operator.content()).includes(key), "the key is not on the page after a reload");
    assert.deepEqual(problems, []);
    await context.close();
  });
});

/** The keys in the store, through the console's own API with the operator's session. */
async function keyList(
  operator: Page,
): Promise<Array<{ id: string; name: string; rpm: number | null; tpm: number | null }>> {
  const list = (await operator.evaluate(() => fetch("/console/api/keys").then((r) => r.json()))) as {
    data: Array<{ id: string; name: string; rpm: number | null; tpm: number | null }>;
  };
  return list.data;
}

const keyNames = async (operator: Page) => (await keyList(operator)).map((k) => k.name);

/**
 * A page of another origin (another port: the same site, so the browser sends the console's SameSite=Strict
 * cookies with its requests) that posts to the console the ways a page can without reading anything back: a
 * form (urlencoded), and a `no-cors` fetch with credentials. Both must be refused for want of the CSRF token.
 */
async function attackerSite(target: string): Promise<{ url: string; server: Server }> {
  const page = `<!doctype html><html><body>
<form id="f" method="POST" action="${target}/console/api/keys"><input name="name" value="evil-form"></form>
<script>
fetch("${target}/console/api/keys", { method: "POST", mode: "no-cors", credentials: "include",
  headers: { "content-type": "text/plain" }, body: JSON.stringify({ name: "evil-fetch" }) })
  .finally(() => { document.title = "fetched"; document.getElementById("f").submit(); });
</script></body></html>`;
  const server = createServer((_req, res) => res.writeHead(200, { "content-type": "text/html" }).end(page));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, server };
}

/** The id of the key issued for the request named `name` (the console's own API, with the operator's session). */
async function issuedKeyId(operator: Page, name: string): Promise<string | undefined> {
  const list = (await operator.evaluate(() => fetch("/console/api/requests?status=all").then((r) => r.json()))) as {
    data: Array<{ name: string; key_id: string | null }>;
  };
  return list.data.find((r) => r.name === name)?.key_id ?? undefined;
}
