import { parentPort } from "node:worker_threads";
import { parseJsonBody } from "./json-body.js";

// The JSON body parser's worker thread: one body at a time, answered with the parsed value or why it is refused.
parentPort!.on("message", ({ id, bytes }: { id: number; bytes: Uint8Array }) => {
  const body = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  parentPort!.postMessage({ id, parsed: parseJsonBody(body) });
});
