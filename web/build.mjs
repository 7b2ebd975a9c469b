// Builds the web console (web/src) into dist/web/assets: one ES module per page, their shared chunks, and one
// stylesheet per page. Run by `npm run build` (and so at `npm install`); nothing is fetched from a CDN at run time.
import { rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = dirname(fileURLToPath(import.meta.url));
const outdir = join(root, "..", "dist", "web", "assets");
rmSync(outdir, { recursive: true, force: true });

await build({
  entryPoints: ["visitor", "access", "console", "playground"].map((page) => join(root, "src", `${page}.tsx`)),
  outdir,
  bundle: true,
  splitting: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: "linked",
  jsx: "automatic",
  jsxImportSource: "preact",
  entryNames: "[name]",
  chunkNames: "chunk-[hash]",
  logLevel: "warning",
  legalComments: "linked",
});
