// Builds the engine's persistent-thread module (ggml_pool.c) at `npm install`, with the node-gyp npm provides.
// A failed build leaves the server working, only slower with more than one engine thread: it warns and the
// install goes on (the server logs the same warning when it starts).
import { spawnSync } from "node:child_process";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";

if (process.platform !== "linux") {
  console.log("native/ggml-pool: Linux only, not built here");
  process.exit(0);
}
const dir = dirname(fileURLToPath(import.meta.url));
const gyp = process.env.npm_config_node_gyp; // set by npm for install scripts
const [command, prefix] = gyp ? [process.execPath, [gyp]] : ["node-gyp", []];
const run = spawnSync(command, [...prefix, "rebuild", "--directory", dir, "--loglevel", "warn"], { stdio: "inherit" });
if (run.status !== 0) {
  console.warn(
    "native/ggml-pool was not built: the engine will start its threads anew at each decode step " +
      "(much slower with more than one thread). Needs a C compiler, make and python3, as node-gyp does.",
  );
}
