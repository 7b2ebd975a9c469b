import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { request as httpRequest, type IncomingHttpHeaders, type OutgoingHttpHeaders } from "node:http";
import { request as httpsRequest } from "node:https";
import { join } from "node:path";
import { describe, test } from "node:test";
import { promisify } from "node:util";
import OpenAI from "openai";
import { Agent, fetch as undiciFetch } from "undici";
import { testModel } from "../helpers/models.js";
import { cliPath } from "../helpers/paths.js";
import { startServer, type RunningServer } from "../helpers/server.js";
import { makeCertificate, opensslMissing } from "../helpers/tls.js";

const MODEL = "lucena-coder-latest";
const run = promisify(execFile);

interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** One request with node's own client: full control over Host and header sizes. `ca` makes it HTTPS. */
function raw(opts: {
  port: number;
  method?: string;
  path?: string;
  headers?: OutgoingHttpHeaders;
  body?: string;
  ca?: string;
  servername?: string;
}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const send = opts.ca ? httpsRequest : httpRequest;
    const req = send(
      {
        host: "127.0.0.1",
        port: opts.port,
        method: opts.method ?? "GET",
        path: opts.path ?? "/",
        headers: opts.headers,
        agent: false,
        ...(opts.ca ? { ca: opts.ca, servername: opts.servername ?? "localhost" } : {}),
      },
      (res) => {
        let body = "";
        res
          .setEncoding("utf8")
          .on("data", (c: string) => (body += c))
          .on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body }));
      },
    );
    req.on("error", reject);
    req.end(opts.body);
  });
}

/** The value a JSON log line with this msg has in `field`. */
function logField(server: RunningServer, msg: string, field: string): unknown {
  for (const line of server.logs) {
    if (!line.startsWith("{")) continue;
    const entry = JSON.parse(line) as Record<string, unknown>;
    if (entry.msg === msg) return entry[field];
  }
  assert.fail(`no "${msg}" log line`);
}

/** The sample's value in Prometheus text, or undefined. Labels are matched exactly as written. */
function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe("HTTPS, redirect, HSTS, header limit, CORS, operations listener", { skip: opensslMissing }, () => {
  test("a server with a certificate", async () => {
    const tls = makeCertificate();
    const origin = "https://app.example";
    const server = await startServer({
      model: testModel(),
      args: ["--tls-cert", tls.cert, "--tls-key", tls.key, "--http-port", "0"],
      config: { max_header_bytes: 4096, cors_origins: [origin] },
    });
    const agent = new Agent({ connect: { ca: tls.pem } });
    const fetchTls = ((url: string, init?: RequestInit) =>
      undiciFetch(url, { ...(init as object), dispatcher: agent })) as unknown as typeof fetch;
    const auth = { authorization: `Bearer ${server.key}` };
    try {
      const https = `https://localhost:${server.port}`;
      assert.equal(logField(server, "listening", "url"), `https://127.0.0.1:${server.port}`);

      // HTTPS with the real openai SDK, JSON and streamed; every hostname of the certificate is served alike.
      for (const host of ["localhost", "127.0.0.1"]) {
        const client = new OpenAI({
          apiKey: server.key,
          baseURL: `https://${host}:${server.port}/v1`,
          fetch: fetchTls,
          maxRetries: 0,
        });
        const res = await client.chat.completions.create({
          model: MODEL,
          max_tokens: 4,
          messages: [{ role: "user", content: "hi" }],
        });
        assert.equal(res.usage?.completion_tokens, 4, host);
      }
      const client = new OpenAI({ apiKey: server.key, baseURL: `${https}/v1`, fetch: fetchTls, maxRetries: 0 });
      const stream = await client.chat.completions.create({
        model: MODEL,
        max_tokens: 3,
        stream: true,
        messages: [{ role: "user", content: "hi" }],
      });
      let usage: OpenAI.Completions.CompletionUsage | undefined;
      for await (const chunk of stream) usage = chunk.usage ?? usage;
      assert.equal(usage?.completion_tokens, 3);
      const plain = await fetch(`http://127.0.0.1:${server.port}/v1/models`).catch((e: Error) => e);
      assert.ok(plain instanceof Error, "the API port speaks only TLS");

      // HSTS on every HTTPS response, a 401 included.
      const models = await fetchTls(`${https}/v1/models`, { headers: auth });
      assert.equal(models.status, 200);
      assert.equal(models.headers.get("strict-transport-security"), "max-age=31536000");
      const noKey = await fetchTls(`${https}/v1/models`);
      assert.equal(noKey.status, 401);
      assert.equal(noKey.headers.get("strict-transport-security"), "max-age=31536000");

      // The plain-HTTP listener redirects every request to the same host and path on HTTPS.
      const httpPort = logField(server, "redirect listening", "port") as number;
      assert.equal(logField(server, "redirect listening", "httpsPort"), server.port);
      for (const host of ["localhost", "127.0.0.1"]) {
        for (const [method, status] of [
          ["GET", 301],
          ["HEAD", 301],
          ["POST", 308],
          ["DELETE", 308],
        ] as const) {
          const res = await raw({
            port: httpPort,
            method,
            path: "/v1/chat/completions?x=1&y=%20",
            headers: { host: `${host}:${httpPort}`, "content-type": "application/json" },
            ...(method === "POST" ? { body: '{"model":"m"}' } : {}),
          });
          assert.equal(res.status, status, `${method} via ${host}`);
          assert.equal(
            res.headers.location,
            `https://${host}:${server.port}/v1/chat/completions?x=1&y=%20`,
            `${method} via ${host}`,
          );
          assert.equal(res.body, "");
          assert.match(String(res.headers["x-request-id"]), /^req_[A-Za-z0-9]{20}$/);
          assert.equal(res.headers["strict-transport-security"], undefined, "no HSTS over plain HTTP");
        }
      }
      const v6 = await raw({ port: httpPort, path: "/", headers: { host: "[::1]" } });
      assert.equal(v6.headers.location, `https://[::1]:${server.port}/`);
      const badHost = await raw({ port: httpPort, path: "/", headers: { host: "a b" } });
      assert.equal(badHost.status, 400);
      assert.equal(badHost.headers.location, undefined);

      // Header section over max_header_bytes (4096 here; Node's own default would take 16 KiB): 431.
      const big = { ...auth, "x-filler": "a".repeat(5000) };
      const tooBig = await raw({ port: server.port, path: "/v1/models", headers: big, ca: tls.pem });
      assert.equal(tooBig.status, 431);
      assert.deepEqual(JSON.parse(tooBig.body).error.code, 431);
      assert.equal(JSON.parse(tooBig.body).error.type, "invalid_request_error");
      assert.match(String(tooBig.headers["x-request-id"]), /^req_/);
      const fits = await raw({
        port: server.port,
        path: "/v1/models",
        headers: { ...auth, "x-filler": "a".repeat(3000) },
        ca: tls.pem,
      });
      assert.equal(fits.status, 200);
      assert.equal(
        (await raw({ port: httpPort, path: "/", headers: { host: "localhost", "x-filler": "a".repeat(5000) } })).status,
        431,
      );

      // CORS for the allowed origin: the preflight needs no key; answers (a 401 too) carry the headers.
      const preflight = await fetchTls(`${https}/v1/chat/completions`, {
        method: "OPTIONS",
        headers: {
          origin,
          "access-control-request-method": "POST",
          "access-control-request-headers": "authorization,content-type",
        },
      });
      assert.ok(preflight.status >= 200 && preflight.status < 300, `preflight answered ${preflight.status}`);
      assert.equal(await preflight.text(), "");
      assert.equal(preflight.headers.get("access-control-allow-origin"), origin);
      assert.equal(preflight.headers.get("access-control-allow-methods"), "GET, POST, OPTIONS");
      assert.equal(preflight.headers.get("access-control-allow-headers"), "Authorization, Content-Type, X-Request-Id");
      assert.match(preflight.headers.get("x-request-id") ?? "", /^req_/);
      const cors = await fetchTls(`${https}/v1/models`, { headers: { ...auth, origin } });
      assert.equal(cors.status, 200);
      assert.equal(cors.headers.get("access-control-allow-origin"), origin);
      assert.match(
        cors.headers.get("access-control-expose-headers") ?? "",
        /X-Request-Id.*Retry-After.*X-RateLimit-Remaining-Requests/,
      );
      const corsNoKey = await fetchTls(`${https}/v1/models`, { headers: { origin } });
      assert.equal(corsNoKey.status, 401);
      assert.equal(corsNoKey.headers.get("access-control-allow-origin"), origin, "a browser can read the 401");
      const notAPreflight = await fetchTls(`${https}/v1/models`, { method: "OPTIONS", headers: { origin } });
      assert.equal(notAPreflight.status, 401, "an OPTIONS that is not a preflight still needs a key");
      const other = await fetchTls(`${https}/v1/models`, { headers: { ...auth, origin: "https://evil.example" } });
      assert.equal(other.status, 200);
      assert.equal(other.headers.get("access-control-allow-origin"), null);

      // The operations listener, on loopback: health, and metrics that saw the completions above.
      assert.equal(logField(server, "ops listening", "url"), server.opsUrl);
      assert.match(server.opsUrl ?? "", /^http:\/\/127\.0\.0\.1:\d+$/);
      const health = await fetch(`${server.opsUrl}/health`);
      assert.equal(health.status, 200);
      assert.deepEqual(await health.json(), { status: "ok", models: { [MODEL]: "ready" } });
      const metrics = await fetch(`${server.opsUrl}/metrics`).then((r) => r.text());
      assert.equal(sample(metrics, `lucena_http_requests_total{route="/v1/chat/completions",status="200"}`), 3);
      assert.equal(sample(metrics, `lucena_tokens_total{model="${MODEL}",kind="completion"}`), 4 + 4 + 3);
      assert.ok((sample(metrics, `lucena_tokens_total{model="${MODEL}",kind="prompt"}`) ?? 0) > 0);
      assert.equal(sample(metrics, `lucena_time_to_first_token_seconds_count{model="${MODEL}"}`), 3);
      assert.equal(sample(metrics, `lucena_completions_total{model="${MODEL}",finish_reason="length"}`), 3);
      assert.equal(sample(metrics, "lucena_active_streams"), 0);
      assert.equal(sample(metrics, `lucena_queue_depth{model="${MODEL}"}`), 0);
      assert.ok(sample(metrics, `lucena_http_requests_total{route="/v1/models",status="401"}`)! >= 2);
      assert.ok(!metrics.includes("app.example") && !metrics.includes('"hi"'), "no request text in labels");
      assert.ok(sample(metrics, "process_resident_memory_bytes")! > 0);
    } finally {
      await agent.close();
      assert.equal(await server.stop(), 0, "a clean exit, the redirect and operations listeners closed");
    }
  });

  test("without a certificate: plain HTTP, no HSTS, no CORS headers, the operations listener", async () => {
    const server = await startServer({ model: testModel() });
    try {
      const origin = "https://app.example";
      const res = await fetch(`${server.url}/v1/models`, {
        headers: { authorization: `Bearer ${server.key}`, origin },
      });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("strict-transport-security"), null);
      assert.deepEqual(
        [...res.headers.keys()].filter((h) => h.startsWith("access-control-")),
        [],
      );
      const preflight = await fetch(`${server.url}/v1/chat/completions`, {
        method: "OPTIONS",
        headers: { origin, "access-control-request-method": "POST" },
      });
      assert.equal(preflight.status, 401, "CORS is off: an OPTIONS is an ordinary request");
      assert.deepEqual(
        [...preflight.headers.keys()].filter((h) => h.startsWith("access-control-")),
        [],
      );
      const health = await fetch(`${server.opsUrl}/health`);
      assert.deepEqual([health.status, await health.json()], [200, { status: "ok", models: { [MODEL]: "ready" } }]);
      assert.match(await fetch(`${server.opsUrl}/metrics`).then((r) => r.text()), /^# HELP /m);
      const onApi = await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${server.key}` } });
      assert.equal(onApi.status, 404, "operations routes are not on the API listener");
    } finally {
      await server.stop();
    }
  });

  test("a certificate or key that cannot be used stops start-up with a clear message and exit code 2", async () => {
    const tls = makeCertificate();
    const missing = await run(
      process.execPath,
      [
        cliPath,
        "serve",
        "--port",
        "0",
        "--ops-port",
        "0",
        "--tls-cert",
        join(tls.dir, "nope.pem"),
        "--tls-key",
        tls.key,
      ],
      { timeout: 30_000 },
    ).catch((e: { code: number; stderr: string }) => e);
    assert.equal((missing as { code: number }).code, 2);
    assert.match((missing as { stderr: string }).stderr, /cannot read the TLS certificate .*nope\.pem/);
    // From the environment this time, and the certificate given as its own key.
    const wrong = await run(process.execPath, [cliPath, "serve", "--port", "0", "--ops-port", "0"], {
      env: { ...process.env, LUCENA_TLS_CERT: tls.cert, LUCENA_TLS_KEY: tls.cert },
      timeout: 30_000,
    }).catch((e: { code: number; stderr: string }) => e);
    assert.equal((wrong as { code: number }).code, 2);
    assert.match((wrong as { stderr: string }).stderr, /TLS certificate .* and key .* cannot be used/);
  });
});
