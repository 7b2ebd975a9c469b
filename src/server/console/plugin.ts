import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import fastifyCookie from "@fastify/cookie";
import fastifyCsrf from "@fastify/csrf-protection";
import fastifyHelmet from "@fastify/helmet";
import type { FastifyInstance, onRequestHookHandler } from "fastify";
import { errors } from "../../core/errors.js";
import type { KeyVerifier } from "../../core/principal.js";
import { AccessRequests } from "../../keys/access-requests.js";
import type { KeyStore } from "../../keys/store.js";
import { UsageReports } from "../../keys/usage-report.js";
import type { LiveView } from "../../observability/live-view.js";
import type { Logger } from "../../observability/log.js";
import type { ModelRegistry } from "../registry.js";
import { operatorOnly, operatorRoutes } from "./operator-routes.js";
import { pageRoutes } from "./pages.js";
import { ConsoleSessions } from "./session.js";
import type { SignInGuard } from "../sign-in-guard.js";
import { usageRoutes } from "./usage-routes.js";
import { visitorRoutes, type AccessRequestPolicy } from "./visitor-routes.js";

export interface ConsoleOptions {
  registry: ModelRegistry;
  store: KeyStore;
  /** The API's key check (configured keys and the store): the playground's own-usage route uses it. */
  keys: KeyVerifier;
  live: LiveView;
  /** The operator signs in with this; null: nobody can (the visitor's page and the playground still work). */
  adminToken: string | null;
  /** Read on each request: `lucena serve` replaces its fields on SIGHUP (closing the form needs no restart). */
  accessRequests: AccessRequestPolicy;
  version: string;
  log: Logger;
  /** The built front-end (web/build.mjs); dist/web/assets by default. */
  assetsDir?: string;
  /** Failed admin-token attempts per address, shared with the admin API (app.ts). */
  guard: SignInGuard;
}

const DEFAULT_ASSETS = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "web", "assets");

/**
 * Content-Security-Policy of every console answer: scripts, styles and connections from this origin only, no
 * inline script or style, no framing, no plugins. A string that slipped past escaping still could not run.
 */
const CSP = {
  defaultSrc: ["'self'"],
  scriptSrc: ["'self'"],
  styleSrc: ["'self'"],
  imgSrc: ["'self'", "data:"],
  connectSrc: ["'self'"],
  fontSrc: ["'self'"],
  objectSrc: ["'none'"],
  baseUri: ["'none'"],
  formAction: ["'self'"],
  frameAncestors: ["'none'"],
  upgradeInsecureRequests: null,
};

/** A state-changing request whose Origin (when the browser sends one) is not this server's: refused as CSRF. */
const sameOrigin: onRequestHookHandler = (req, _reply, done) => {
  const origin = req.headers.origin;
  // Host and port, through URL so that a default port written or left out compares equal. Not the scheme:
  // behind a proxy that ends TLS without trust_proxy the server sees http while the page is https; the CSRF
  // token, which another site cannot read, is what stops a forged request.
  let same = true;
  if (origin !== undefined) {
    try {
      same = new URL(origin).host === new URL(`${req.protocol}://${req.host}`).host;
    } catch {
      same = false;
    }
  }
  done(same ? undefined : errors.csrf());
};

/**
 * The web console (docs/console.md), registered as its own Fastify context on the API's port: its cookies, CSRF
 * tokens and security headers stay inside it, and its routes are marked `console` (no API key asked by the app's
 * auth hook; each route checks what it needs) and `cors: false` (off the API's CORS rules).
 */
export async function consolePlugin(app: FastifyInstance, o: ConsoleOptions): Promise<void> {
  app.addHook("onRoute", (route) => {
    route.config = { ...route.config, console: true, cors: false };
    const method = ([] as string[]).concat(route.method);
    if (method.every((m) => m === "GET" || m === "HEAD")) return;
    // Every state-changing route: the Origin check, then the CSRF token (header x-csrf-token) against its cookie.
    const own = route.onRequest === undefined ? [] : ([] as onRequestHookHandler[]).concat(route.onRequest);
    route.onRequest = [sameOrigin, (req, reply, done) => app.csrfProtection(req, reply, done), ...own];
  });
  await app.register(fastifyHelmet, {
    contentSecurityPolicy: { useDefaults: false, directives: CSP },
    // HSTS is the transport's (only over HTTPS, with the configured max-age).
    strictTransportSecurity: false,
    referrerPolicy: { policy: "no-referrer" },
  });
  await app.register(fastifyCookie);
  await app.register(fastifyCsrf, { cookieOpts: { path: "/", sameSite: "strict", httpOnly: true } });

  const requests = new AccessRequests(o.store);
  const sessions = new ConsoleSessions();
  await pageRoutes(app, o.assetsDir ?? DEFAULT_ASSETS, o.log);
  visitorRoutes(app, {
    registry: o.registry,
    requests,
    policy: o.accessRequests,
    operatorCanDecide: o.adminToken !== null,
    version: o.version,
  });
  operatorRoutes(app, {
    store: o.store,
    requests,
    registry: o.registry,
    sessions,
    guard: o.guard,
    adminToken: o.adminToken,
  });
  usageRoutes(app, {
    store: o.store,
    reports: new UsageReports(o.store.database),
    live: o.live,
    registry: o.registry,
    keys: o.keys,
    operator: operatorOnly(sessions),
  });
}

declare module "fastify" {
  interface FastifyContextConfig {
    /** A route of the web console: it checks its own credentials (session, key or none), not the API's key. */
    console?: boolean;
    /** Read by @fastify/cors: false leaves the route out of the API's CORS rules. */
    cors?: false;
  }
}
