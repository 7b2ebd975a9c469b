import { existsSync } from "node:fs";
import { join } from "node:path";
import fastifyStatic from "@fastify/static";
import type { FastifyInstance } from "fastify";
import type { Logger } from "../../observability/log.js";

/** The console's pages: path → the page's script and stylesheet (dist/web/assets/<page>.js, .css). */
export const PAGES = {
  "/": { page: "visitor", title: "Request API access" },
  "/access": { page: "access", title: "Your access request" },
  "/console": { page: "console", title: "Console" },
  "/playground": { page: "playground", title: "Playground" },
} as const;

/**
 * Each page is this one shell; the page's script (built by web/build.mjs) draws it. Nothing in it comes from a
 * request, so it needs no escaping; no inline script or style, as the Content-Security-Policy forbids them.
 */
function shell(page: string, title: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${title} · Lucena One</title>
<link rel="stylesheet" href="/assets/${page}.css">
<script type="module" src="/assets/${page}.js"></script>
</head>
<body><div id="app"></div><noscript>This page needs JavaScript.</noscript></body>
</html>
`;
}

const NOT_BUILT = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Lucena One</title></head>
<body><p>The web console's files are not built. Run <code>npm run build</code> (it runs at <code>npm install</code>) and
restart the server.</p></body></html>
`;

/** Serves the pages and their built assets (under /assets/); without a build, each page says how to make one. */
export async function pageRoutes(app: FastifyInstance, assetsDir: string, log: Logger): Promise<void> {
  const built = existsSync(join(assetsDir, "visitor.js"));
  if (!built) log.warn({ assetsDir }, "the web console's files are not built (npm run build); its pages say so");
  else await app.register(fastifyStatic, { root: assetsDir, prefix: "/assets/", index: false, wildcard: true });
  for (const [path, { page, title }] of Object.entries(PAGES)) {
    const html = built ? shell(page, title) : NOT_BUILT;
    app.get(path, async (_req, reply) =>
      reply
        .code(built ? 200 : 503)
        .type("text/html; charset=utf-8")
        .header("cache-control", "no-cache")
        .send(html),
    );
  }
}
