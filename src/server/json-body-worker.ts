import { parentPort } from "node:worker_threads";
import { parseJsonBody, type ParsedBody } from "./json-body.js";

// The JSON body parser's worker thread: one body at a time, answered with the parsed value or why it is refused.
parentPort!.on("message", ({ id, bytes }: { id: number; bytes: Uint8Array }) => {
  const parsed = parseJsonBody(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  try {
    parentPort!.postMessage({ id, parsed });
  } catch (err) {
    // A value that cannot be handed back (parseJsonBody bounds its depth, so this is not expected) is refused.
    const refused: ParsedBody = { ok: false, message: `The request body could not be read: ${(err as Error).message}` };
    parentPort!.postMessage({ id, parsed: refused });
  }
});
