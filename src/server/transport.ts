import { readFileSync } from "node:fs";
import {
  createServer,
  STATUS_CODES,
  type IncomingMessage,
  type Server,
  type ServerOptions,
  type ServerResponse,
} from "node:http";
import type { Server as NetServer, Socket } from "node:net";
import { createSecureContext } from "node:tls";
import cors from "@fastify/cors";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { base62 } from "../core/ids.js";
import type { Logger } from "../observability/log.js";
import { unreadableRequestBody } from "./http-errors.js";

/** A PEM certificate (chain) and its private key, read once at start. */
export interface TlsFiles {
  cert: Buffer;
  key: Buffer;
}

/** How the API is served on the wire (docs/api.md, "Transport"). */
export interface TransportOptions extends ConnectionLimits {
  /** HTTPS with this certificate; null: plain HTTP (local use, or behind a proxy). */
  tls: TlsFiles | null;
  /** `Strict-Transport-Security: max-age=…` on every HTTPS response (never over plain HTTP). */
  hstsMaxAgeSeconds: number;
  /** Browser origins allowed by CORS ("*": any); empty: CORS off, no Access-Control-* header at all. */
  corsOrigins: readonly string[];
  /** Largest request head accepted; a larger one gets 431. */
  maxHeaderBytes: number;
}

/**
 * What a connection may hold of the server, on the API's listener and on the redirect listener alike. A request
 * that does not arrive in time gets 408 (in the API's error shape) and its connection is closed.
 */
export interface ConnectionLimits {
  /** Longest time to receive a request's head from its first byte (over TLS, also the longest handshake). */
  headersTimeoutMs: number;
  /** Longest time to receive a whole request, head and body, from its first byte. The response is not covered. */
  requestTimeoutMs: number;
  /** Most connections open at once; beyond it, a new connection is closed as soon as it is accepted. */
  maxConnections: number;
}

/** A certificate or key that cannot be used: reported at start, before anything listens. */
export class TlsFileError extends Error {}

/** Reads the PEM files once and checks that they make a usable TLS context (a key that matches the certificate). */
export function readTlsFiles(certPath: string, keyPath: string): TlsFiles {
  const read = (what: string, path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new TlsFileError(`cannot read the TLS ${what} ${path}: ${(err as Error).message}`);
    }
  };
  const files = { cert: read("certificate", certPath), key: read("key", keyPath) };
  try {
    createSecureContext(files);
  } catch (err) {
    throw new TlsFileError(
      `the TLS certificate ${certPath} and key ${keyPath} cannot be used: ${(err as Error).message}`,
    );
  }
  return files;
}

/** Same rule as the API's request ids: a caller's well-formed id is kept. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
function requestIdOf(req: IncomingMessage): string {
  const given = req.headers["x-request-id"];
  return typeof given === "string" && REQUEST_ID.test(given) ? given : `req_${base62(20)}`;
}

/** Connections this server closed because their request did not arrive in time. */
const timedOutSockets = new WeakSet<Socket>();

/** Whether the server closed this connection because its request (head or body) did not arrive in time. */
export function timedOut(socket: Socket | null | undefined): boolean {
  return socket != null && timedOutSockets.has(socket);
}

/**
 * Answers a request Node could not parse (a head over `maxHeaderSize`: 431; a timeout: 408; anything else:
 * 400) in the API's error shape, with an x-request-id, instead of Fastify's own body. As Node and Fastify do,
 * nothing is written on a socket that is no longer writable, and the connection is then closed.
 */
export function clientErrorHandler(err: Error & { code?: string }, socket: Socket): void {
  if (err.code === "ECONNRESET" || socket.destroyed) return;
  if (err.code === "ERR_HTTP_REQUEST_TIMEOUT") timedOutSockets.add(socket);
  const [status, message] =
    err.code === "HPE_HEADER_OVERFLOW"
      ? [431, "The request's headers are larger than the server accepts."]
      : err.code === "ERR_HTTP_REQUEST_TIMEOUT"
        ? [408, "The request was not received in time."]
        : [400, "The request could not be read."];
  if (socket.writable) {
    const body = JSON.stringify(unreadableRequestBody(message, status));
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json; charset=utf-8\r\n` +
        `content-length: ${Buffer.byteLength(body)}\r\nx-request-id: req_${base62(20)}\r\nconnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

/**
 * Node's http options that enforce the limits. Node checks its timeouts every `connectionsCheckingInterval`
 * (30 s by default, which would let a 20 s headers timeout run to 50 s), so the check runs at a quarter of the
 * shorter timeout, at most every second: a walk over the connections still receiving a request, cheap.
 * `requestTimeout` ends with the request's last byte (Node stops the clock when the message is complete), so a
 * long stream in answer is never cut by it.
 */
/** How long a connection closed with part of its request unread keeps reading (and dropping) what still comes. */
export const LINGER_MS = 2000;

/**
 * A lingering close, as nginx does: when the server answers before it has read the whole request (a 413 refused
 * on its Content-Length) and then closes, the client may still be sending; closing the socket with its data unread
 * makes the kernel reset the connection, and a client that has not yet read the answer loses it. So the socket
 * is half-closed after the answer, keeps reading and dropping what the client sends until the client ends or
 * LINGER_MS pass, and only then is destroyed. Node's HTTP server closes a `Connection: close` response with
 * `destroySoon()`; this makes that call linger, on this socket only.
 */
export function lingerOnClose(socket: Socket): void {
  socket.destroySoon = function lingeringClose(this: Socket) {
    if (this.destroyed) return;
    if (this.writable) this.end();
    const timer = setTimeout(() => this.destroy(), LINGER_MS);
    timer.unref();
    this.once("close", () => clearTimeout(timer));
    this.once("end", () => this.destroy());
    this.on("data", () => {}); // dropped
    this.resume();
  };
}

function timeoutOptions(l: ConnectionLimits): ServerOptions {
  const interval = Math.max(50, Math.min(1000, Math.floor(Math.min(l.headersTimeoutMs, l.requestTimeoutMs) / 4)));
  return {
    headersTimeout: l.headersTimeoutMs,
    requestTimeout: l.requestTimeoutMs,
    connectionsCheckingInterval: interval,
  };
}

/**
 * The Fastify factory options for the listening socket: TLS or not, the header limit, the timeouts, and the
 * client-error answer. With TLS this is Fastify's `https` option (node's https.createServer, which takes the
 * http server options too, and `handshakeTimeout`: a TLS handshake is part of receiving the head, and Node's
 * own 120 s would outlast the headers timeout); without, its `http` option. Fastify sets the server's
 * `requestTimeout` from its own option of that name, so it is given there too.
 *
 * Typed as the plain-HTTP options on purpose: an https.Server hands Fastify the same IncomingMessage /
 * ServerResponse pairs, so the app keeps the one `FastifyInstance` type the rest of the code uses.
 */
export function serverOptions(t: TransportOptions | undefined): {
  http?: ServerOptions;
  requestTimeout?: number;
  clientErrorHandler?: typeof clientErrorHandler;
} {
  if (!t) return {};
  const socket: ServerOptions = { maxHeaderSize: t.maxHeaderBytes, ...timeoutOptions(t) };
  const common = { requestTimeout: t.requestTimeoutMs, clientErrorHandler };
  if (t.tls)
    return {
      https: { ...socket, cert: t.tls.cert, key: t.tls.key, handshakeTimeout: t.headersTimeoutMs },
      ...common,
    } as { http?: ServerOptions };
  return { http: socket, ...common };
}

/**
 * Caps the server's open connections. Node closes a connection over the cap as soon as it is accepted, before
 * any byte is read (there is nothing to answer yet); that is logged at most once a minute, with the count.
 */
export function capConnections(server: Server | NetServer, max: number, log: Logger): void {
  server.maxConnections = max;
  let dropped = 0;
  let lastLog = 0;
  server.on("drop", () => {
    dropped++;
    const now = Date.now();
    if (now - lastLog < 60_000) return;
    lastLog = now;
    log.warn({ maxConnections: max, dropped }, "connection limit reached: new connections are closed");
    dropped = 0;
  });
}

/**
 * HSTS and CORS. Call before the app's own onRequest hook: hooks run in the order they are added, and these
 * must have set their headers before the auth check can end a request with 401 (a browser reads a 401 body
 * only when it carries Access-Control-Allow-Origin).
 */
export function applyTransport(app: FastifyInstance, t: TransportOptions | undefined): void {
  if (!t) return;
  if (t.tls) {
    const hsts = `max-age=${t.hstsMaxAgeSeconds}`;
    app.addHook("onRequest", async (_req, reply) => {
      reply.header("strict-transport-security", hsts);
    });
  }
  if (t.corsOrigins.length > 0) {
    const options = {
      origin: t.corsOrigins.includes("*") ? "*" : [...t.corsOrigins],
      methods: ["GET", "POST", "OPTIONS"],
      allowedHeaders: ["Authorization", "Content-Type", "X-Request-Id"],
      exposedHeaders: [
        "X-Request-Id",
        "Retry-After",
        "X-RateLimit-Limit-Requests",
        "X-RateLimit-Remaining-Requests",
        "X-RateLimit-Reset-Requests",
        "X-RateLimit-Limit-Tokens",
        "X-RateLimit-Remaining-Tokens",
        "X-RateLimit-Reset-Tokens",
      ],
      maxAge: 600,
      // The plugin only adds headers; the preflight then goes through the app's own hook (request id, log
      // line) and is answered, empty, by the plugin's OPTIONS route. Every OPTIONS counts as a preflight
      // for the plugin; the app lets only real ones (isCorsPreflight) through without a key.
      preflightContinue: true,
      strictPreflight: false,
    };
    // The rules are the API's (/v1, /admin): the web console's paths get no CORS header, preflights included
    // (the plugin's OPTIONS route serves every path), so that no other site's script may call them.
    void app.register(
      cors,
      () => (req: FastifyRequest, done: (err: Error | null, o: typeof options | { origin: false }) => void) =>
        done(null, underApiRules(req.url) ? options : { origin: false }),
    );
  }
}

/** A URL's path, percent-decoded as the router decodes it; null when it cannot be decoded. */
function decodedPath(url: string): string | null {
  const query = url.indexOf("?");
  try {
    return decodeURIComponent(query === -1 ? url : url.slice(0, query));
  } catch {
    return null;
  }
}

const isV1 = (path: string | null) => path === null || path === "/v1" || path.startsWith("/v1/");

/** Whether a URL's path, percent-decoded, is /v1 or below it; an undecodable path counts as one. */
export function isApiPath(url: string): boolean {
  return isV1(decodedPath(url));
}

/** The paths the API's CORS rules cover: /v1 (isApiPath) and /admin; the path decoded once. */
function underApiRules(url: string): boolean {
  const path = decodedPath(url);
  return isV1(path) || (path?.startsWith("/admin/") ?? false);
}

/**
 * A CORS preflight, with CORS on: OPTIONS with Origin and Access-Control-Request-Method. Browsers never
 * send credentials on one, so it cannot carry an API key.
 */
export function isCorsPreflight(req: FastifyRequest, t: TransportOptions | undefined): boolean {
  return (
    (t?.corsOrigins.length ?? 0) > 0 &&
    req.method === "OPTIONS" &&
    typeof req.headers.origin === "string" &&
    typeof req.headers["access-control-request-method"] === "string"
  );
}

/** Where a plain-HTTP request goes on HTTPS: the same hostname and path; null when the Host header is unusable. */
export function redirectLocation(req: IncomingMessage, httpsPort: number): string | null {
  let host: URL;
  try {
    host = new URL(`http://${req.headers.host ?? ""}`);
  } catch {
    return null;
  }
  if (!host.hostname || host.username || host.password || host.pathname !== "/" || host.search || host.hash)
    return null;
  const raw = req.url ?? "/";
  let target = "/";
  if (raw.startsWith("/")) target = raw;
  else if (/^https?:\/\//i.test(raw)) {
    // absolute-form request target (as sent to a proxy): keep its path and query only
    try {
      const u = new URL(raw);
      target = u.pathname + u.search;
    } catch {
      return null;
    }
  }
  return `https://${host.hostname}${httpsPort === 443 ? "" : `:${httpsPort}`}${target}`;
}

/**
 * The plain-HTTP listener next to HTTPS: every request gets 301 (GET, HEAD) or 308 (any other method, so a
 * POST is repeated with its body) to the same hostname and path on HTTPS, with an empty body. Every hostname
 * is served alike: no allow-list.
 */
export function createRedirectServer(opts: {
  httpsPort: number;
  maxHeaderBytes: number;
  limits: ConnectionLimits;
  log: Logger;
}): Server {
  const options: ServerOptions = { maxHeaderSize: opts.maxHeaderBytes, ...timeoutOptions(opts.limits) };
  const server = createServer(options, (req: IncomingMessage, res: ServerResponse) => {
    const id = requestIdOf(req);
    const location = redirectLocation(req, opts.httpsPort);
    if (location === null) {
      const body = JSON.stringify(unreadableRequestBody("The Host header is missing or invalid.", 400));
      res.writeHead(400, {
        "content-type": "application/json; charset=utf-8",
        "content-length": Buffer.byteLength(body),
        "x-request-id": id,
      });
      res.end(body);
    } else {
      const status = req.method === "GET" || req.method === "HEAD" ? 301 : 308;
      res.writeHead(status, { location, "content-length": 0, "x-request-id": id });
      res.end();
    }
    opts.log.info({ reqId: id, method: req.method, status: res.statusCode }, "redirect");
  });
  server.on("clientError", clientErrorHandler);
  capConnections(server, opts.limits.maxConnections, opts.log);
  return server;
}

/** Stops the redirect listener and closes its open connections (kept-alive ones would hold the close). */
export async function closeRedirectServer(server: Server): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeAllConnections();
  await closed;
}
