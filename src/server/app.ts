import { setMaxListeners } from "node:events";
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from "fastify";
import { base62 } from "../core/ids.js";
import { KeyWatch } from "../keys/key-watch.js";
import { NO_USAGE_JOURNAL, type UsageJournal } from "../keys/ledger.js";
import { RateLimiter } from "../keys/limiter.js";
import type { KeyStore } from "../keys/store.js";
import { adminGuard, adminRoutes } from "./routes/admin.js";
import type { Logger } from "../observability/log.js";
import { authenticate } from "./auth.js";
import type { KeyVerifier } from "../core/principal.js";
import { LucenaError, errors } from "../core/errors.js";
import { httpError, type HttpError } from "./http-errors.js";
import { JsonBodyParser } from "./json-body.js";
import type { ModelRegistry } from "./registry.js";
import { chatRoute } from "./routes/chat.js";
import { responsesRoute } from "./routes/responses.js";
import { completionsRoute } from "./routes/completions.js";
import { embeddingsRoute } from "./routes/embeddings.js";
import { ResponseStore } from "./response-store.js";
import type { CompletionOutcome } from "./completion-flow.js";
import type { CompletionSummary, RequestRecord } from "../core/request-record.js";
import { modelsRoute } from "./routes/models.js";
import { consolePlugin, type ConsoleOptions } from "./console/plugin.js";
import { LiveView } from "../observability/live-view.js";
import { SignInGuard } from "./sign-in-guard.js";
import { statsRoute } from "./routes/stats.js";
import { tokensRoute } from "./routes/tokens.js";
import {
  applyTransport,
  capConnections,
  isApiPath,
  isCorsPreflight,
  lingerOnClose,
  serverOptions,
  timedOut,
  type TransportOptions,
} from "./transport.js";

/** Told of each request when it is over (core/request-record.ts). */
export type RequestObserver = (record: RequestRecord) => void;

export interface AppOptions {
  registry: ModelRegistry;
  /** The admin API (/admin/v1), when an admin token is configured. */
  admin?: { token: string; store: KeyStore };
  /** Per-key limits (a fresh limiter when absent). */
  limiter?: RateLimiter;
  /** Called once per request when it is over; each must be fast and must not throw (errors are logged). */
  observers?: RequestObserver[];
  /** The usage ledger (none when absent). */
  usage?: UsageJournal;
  keys: KeyVerifier;
  log: Logger;
  bodyLimit: number;
  alwaysStream: boolean;
  keepaliveMs: number;
  /** The web console (server/console/); absent: off, every console path is a 404. */
  console?: Omit<ConsoleOptions, "registry" | "keys" | "live" | "log" | "guard">;
  /** Failed admin-token attempts per address (a fresh guard when absent: 5 failures lock out for 15 minutes). */
  signInGuard?: SignInGuard;
  /** Fastify's trustProxy: whose X-Forwarded-For / -Proto to believe (config `trust_proxy`). */
  trustProxy?: boolean | string;
  /** HTTPS, HSTS, CORS, the header limit, timeouts and connection cap (transport.ts); absent: plain HTTP, CORS off, Node's limits. */
  transport?: TransportOptions;
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Ajv's first error → a 400 naming the parameter (`messages[0].role`, `temperature`, …). */
function validationError(err: FastifyError): LucenaError {
  const v = err.validation?.[0];
  if (!v) return errors.invalidRequest("Invalid request body.");
  const path = v.instancePath
    .split("/")
    .filter(Boolean)
    .map((p, i) => (/^\d+$/.test(p) ? `[${p}]` : i === 0 ? p : `.${p}`))
    .join("");
  const missing = (v.params as { missingProperty?: string }).missingProperty;
  if (v.keyword === "required" && missing) {
    const param = path ? `${path}.${missing}` : missing;
    return errors.invalidRequest(`Missing required parameter: '${param}'.`, param);
  }
  if (!path) return errors.invalidRequest(`The request body ${v.message ?? "is invalid"}.`);
  return errors.invalidRequest(`Invalid value for '${path}': ${v.message ?? "invalid"}.`, path);
}

/** nginx's status for a request whose client closed the connection before any answer went out. */
export const CLIENT_CLOSED = 499;

/**
 * The status a finished request is recorded with (log, metrics, ledger): the status sent, when one was; else
 * 408 when the server cut a request that did not arrive in time, and {@link CLIENT_CLOSED} when the client left.
 */
function recordedStatus(req: FastifyRequest, reply: FastifyReply): number {
  if (reply.raw.headersSent) return reply.raw.statusCode;
  return timedOut(req.raw.socket) ? 408 : CLIENT_CLOSED;
}

/** An error that only says the request could not be read because its connection closed. */
function isClientGone(err: FastifyError): boolean {
  return (
    err instanceof LucenaError ||
    err.code === "ECONNRESET" ||
    err.code === "ERR_STREAM_PREMATURE_CLOSE" ||
    (err.code?.startsWith("FST_") ?? false)
  );
}

function summary({ settled: _settled, ...c }: CompletionOutcome): CompletionSummary {
  return { ...c, ttftMs: c.ttftMs === null ? null : Math.round(c.ttftMs * 10) / 10 };
}

/** Logs one line for a finished request (no key, prompt or completion) and gives its record to every observer. */
function reportRequest(
  req: FastifyRequest,
  status: number,
  aborted: boolean,
  started: number,
  observers: readonly RequestObserver[],
): void {
  const c = req.completion;
  const record: RequestRecord = {
    requestId: req.id,
    method: req.method,
    route: req.routeOptions.url ?? null,
    status,
    durationMs: Math.round((performance.now() - started) * 10) / 10,
    keyId: req.principal?.keyId ?? null,
    aborted,
    completion: c ? summary(c) : null,
  };
  const done = record.completion;
  req.log.info(
    {
      method: record.method,
      path: record.route ?? "(unmatched)",
      status: record.status,
      ms: record.durationMs,
      key: record.keyId ?? undefined,
      ...(done
        ? {
            model: done.model,
            stream: done.stream,
            promptTokens: done.promptTokens,
            completionTokens: done.completionTokens,
            finish: done.finishReason,
            ttftMs: done.ttftMs === null ? null : Math.round(done.ttftMs),
          }
        : {}),
      aborted: record.aborted,
    },
    "request",
  );
  for (const observe of observers) {
    try {
      observe(record);
    } catch (err) {
      req.log.error({ err }, "request observer failed");
    }
  }
}

/** Builds the HTTP application: parsing, auth, routes, and the one error handler. */
export function buildApp(opts: AppOptions): FastifyInstance {
  const app = Fastify({
    ...serverOptions(opts.transport),
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-assertion -- it sets the instance's logger type
    loggerInstance: opts.log as FastifyBaseLogger,
    // One line per request, written by the onRequest hook below, instead of Fastify's two.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: opts.bodyLimit,
    genReqId: (req) => {
      const given = req.headers["x-request-id"];
      return typeof given === "string" && REQUEST_ID.test(given) ? given : `req_${base62(20)}`;
    },
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false, allErrors: false } },
    // While closing, the onRequest hook answers with the API's own 503 body instead.
    return503OnClosing: false,
    trustProxy: opts.trustProxy ?? false,
  });

  // JSON only, and only valid UTF-8: a body with broken bytes is refused, not silently repaired. Large bodies are
  // parsed in a worker thread (json-body.ts), so that no body holds the event loop.
  const bodies = new JsonBodyParser();
  app.addHook("onClose", () => bodies.close());
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("application/json", { parseAs: "buffer" }, (_req: FastifyRequest, body: Buffer) =>
    bodies.parse(body),
  );

  // Failed admin-token attempts per address: one count for the admin API and the console's sign-in.
  const signIns = opts.signInGuard ?? new SignInGuard();
  const checkAdmin = opts.admin ? adminGuard(opts.admin.token, signIns) : null;
  // HSTS and CORS come before the hook below, so that their headers are on every answer, a 401 included.
  applyTransport(app, opts.transport);
  if (opts.transport) capConnections(app.server, opts.transport.maxConnections, opts.log);
  const observers = [...(opts.observers ?? [])];
  // What the console's live view knows: requests as they end, tokens as they are delivered.
  const live = opts.console ? new LiveView() : null;
  if (live) observers.push(live.observe);
  let inFlight = 0;
  app.decorate("inFlight", () => inFlight);
  const lifecycle = { closing: false, stop: new AbortController() };
  // Every completion in flight listens on this one signal: as many listeners as requests is expected, not a leak.
  setMaxListeners(0, lifecycle.stop.signal);
  app.decorate("lifecycle", lifecycle);
  app.addHook("onRequest", async (req, reply) => {
    reply.header("x-request-id", req.id);
    if (lifecycle.closing) throw errors.shuttingDown();
    const started = performance.now();
    inFlight++;
    // One record per request, once the response is closed and any generation has ended: logged, then given
    // to every observer (usage ledger, metrics); only then is the request no longer in flight.
    reply.raw.once(
      "close",
      () =>
        void (req.completion?.settled ?? Promise.resolve()).then(() => {
          try {
            reportRequest(req, recordedStatus(req, reply), !reply.raw.writableFinished, started, observers);
          } finally {
            inFlight--;
          }
        }),
    );
    // A CORS preflight never carries Authorization (browsers send it without credentials), so with CORS on it
    // needs no key: it is answered with the CORS headers only, by the CORS plugin's OPTIONS route.
    if (isCorsPreflight(req, opts.transport)) return;
    // Every route this app serves is API; an unmatched path needs a key when, decoded as the router decodes
    // it, it lies under /v1. (Checking the raw URL would let /%76%31/… reach a route without a key.)
    // The console's routes check their own credential (none, a session, or a key): console/plugin.ts.
    if (req.routeOptions.config.console) return;
    if (req.routeOptions.config.admin) {
      checkAdmin!(req.headers.authorization, req.ip);
    } else if (!req.is404 || isApiPath(req.url)) {
      req.principal = authenticate(req.headers.authorization, opts.keys);
    }
  });

  app.decorateRequest("principal", null);
  app.setErrorHandler((err: FastifyError, req, reply) => {
    if (req.raw.socket?.destroyed) {
      // Nobody is left to answer: a client that went away mid-body (or whose body timed out) is not a failure of
      // ours, and is recorded as such (recordedStatus); only an unexpected error still counts as one.
      if (isClientGone(err))
        req.log.info({ reason: err.code ?? err.message }, "client closed the connection before the answer");
      else req.log.error({ err }, "request failed after the client closed the connection");
      reply.hijack();
      return;
    }
    let apiErr: HttpError;
    if (err instanceof LucenaError) apiErr = httpError(err);
    else if (err.validation) apiErr = httpError(validationError(err));
    else if (err.code === "FST_ERR_CTP_BODY_TOO_LARGE") {
      // Refused on its Content-Length, with the body still coming: the answer must not be lost to a reset.
      lingerOnClose(req.raw.socket);
      reply.header("connection", "close");
      apiErr = httpError(errors.bodyTooLarge(opts.bodyLimit));
    } else if (err.code === "FST_CSRF_INVALID_TOKEN" || err.code === "FST_CSRF_MISSING_SECRET") {
      apiErr = httpError(errors.csrf());
    } else if (err.code === "FST_ERR_CTP_INVALID_MEDIA_TYPE") {
      const type = req.headers["content-type"];
      apiErr = httpError(type === undefined ? errors.missingMediaType() : errors.unsupportedMediaType(type));
    }
    // Only Fastify's own errors speak for the client's request; any other error's statusCode is not ours.
    else if (
      err.code?.startsWith("FST_") &&
      typeof err.statusCode === "number" &&
      err.statusCode >= 400 &&
      err.statusCode < 500
    ) {
      apiErr = httpError(errors.invalidRequest("The request could not be read."), err.statusCode);
    } else {
      req.log.error({ err }, "request failed");
      apiErr = httpError(errors.internal());
    }
    reply.code(apiErr.status).headers(apiErr.headers).send(apiErr.body);
  });
  app.setNotFoundHandler(async () => {
    throw errors.routeNotFound();
  });

  modelsRoute(app, opts.registry);
  const limiter = opts.limiter ?? new RateLimiter();
  const keyWatch = new KeyWatch((keyId) => opts.keys.stillUsable?.(keyId) ?? true);
  app.addHook("onClose", () => keyWatch.close());
  const completions = {
    registry: opts.registry,
    limiter,
    alwaysStream: opts.alwaysStream,
    keepaliveMs: opts.keepaliveMs,
    stopping: lifecycle.stop.signal,
    keyWatch,
    // The console's live view counts tokens as the ledger is told of them.
    usage: live ? live.journal(opts.usage ?? NO_USAGE_JOURNAL) : (opts.usage ?? NO_USAGE_JOURNAL),
  };
  chatRoute(app, completions);
  responsesRoute(app, { ...completions, store: new ResponseStore() });
  completionsRoute(app, completions);
  embeddingsRoute(app, completions);
  tokensRoute(app, opts.registry, limiter);
  statsRoute(app, opts.registry);
  if (opts.admin) adminRoutes(app, opts.admin.store);
  if (opts.console && live) {
    void app.register(consolePlugin, {
      ...opts.console,
      registry: opts.registry,
      keys: opts.keys,
      live,
      log: opts.log,
      guard: signIns,
    });
  }
  return app;
}

declare module "fastify" {
  interface FastifyRequest {
    principal: import("../core/principal.js").Principal | null;
  }
  interface FastifyInstance {
    /** Requests received and not yet finished (their generation included). */
    inFlight(): number;
    /** `closing`: new requests get 503; `stop`: aborted at the shutdown deadline, ending every generation. */
    lifecycle: { closing: boolean; stop: AbortController };
  }
}

const waitFor = async (done: () => boolean, ms: number) => {
  const deadline = Date.now() + ms;
  while (!done() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
};

/**
 * Closes the HTTP side: stops accepting (new requests on open connections get 503), lets requests in flight
 * finish for up to `graceMs`, then ends the generations still running (a stream gets an error event and
 * [DONE], a JSON request a 503), and finally closes every connection still open. A client's open connection
 * with no request on it never delays the exit.
 */
export async function closeApp(app: FastifyInstance, graceMs: number): Promise<void> {
  app.lifecycle.closing = true;
  const closing = app.close();
  await waitFor(() => app.inFlight() === 0, graceMs);
  if (app.inFlight() > 0) {
    app.lifecycle.stop.abort();
    await waitFor(() => app.inFlight() === 0, 5000);
  }
  app.server.closeAllConnections();
  await closing;
}
