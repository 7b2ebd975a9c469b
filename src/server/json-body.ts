import { isUtf8 } from "node:buffer";
import { Worker } from "node:worker_threads";
import sjson from "secure-json-parse";
import { errors } from "../core/errors.js";

/**
 * Bodies up to this size are parsed on the event loop (well under a millisecond); larger ones in a worker thread.
 * Measured here, a 3.9 MB body took 22–125 ms to check, decode and parse on the event loop, holding every other
 * request for that long; the worker hands back the parsed value for a copy of about 1 ms per 4 MB.
 */
export const INLINE_BODY_BYTES = 64 * 1024;

/**
 * The deepest nesting of arrays and objects a body may have. Far beyond any request of the API (tool schemas
 * included); deeper values would overflow the stack of code that walks them recursively (structured clone, schema
 * validation): 50,000 nested arrays answered 500.
 */
export const MAX_BODY_DEPTH = 256;

/** What the parse of one body gave: the value, or why the body is refused. */
export type ParsedBody = { ok: true; value: unknown } | { ok: false; message: string };

/** Checks a request body is UTF-8 and parses it as JSON, refusing `__proto__` and `constructor.prototype` keys. */
export function parseJsonBody(body: Buffer): ParsedBody {
  if (body.length === 0) return { ok: false, message: "The request body is empty; send a JSON object." };
  if (!isUtf8(body)) return { ok: false, message: "The request body is not valid UTF-8." };
  let value: unknown;
  try {
    value = sjson.parse(body.toString("utf8"), undefined, { protoAction: "error", constructorAction: "error" });
  } catch (err) {
    return { ok: false, message: `The request body is not valid JSON: ${(err as Error).message}` };
  }
  if (depthOver(value, MAX_BODY_DEPTH))
    return { ok: false, message: `The request body is nested more than ${MAX_BODY_DEPTH} levels deep.` };
  return { ok: true, value };
}

/** Whether arrays and objects nest deeper than `max` (walked without recursion). */
function depthOver(root: unknown, max: number): boolean {
  const stack: [unknown, number][] = [[root, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (typeof v !== "object" || v === null) continue;
    if (depth > max) return true;
    for (const child of Array.isArray(v) ? v : Object.values(v)) {
      if (typeof child === "object" && child !== null) stack.push([child, depth + 1]);
    }
  }
  return false;
}

interface Pending {
  resolve(parsed: ParsedBody): void;
  reject(err: Error): void;
}

/**
 * Parses large JSON bodies off the event loop, in one worker thread (started on the first large body), one body at
 * a time. Small bodies are parsed inline. Concurrency contract: `parse` may be called any number of times at once;
 * answers come back in order. `close` ends the worker; a parse still waiting then fails.
 */
export class JsonBodyParser {
  private worker: Worker | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;

  async parse(body: Buffer): Promise<unknown> {
    const parsed = body.length <= INLINE_BODY_BYTES ? parseJsonBody(body) : await this.offload(body);
    if (!parsed.ok) throw errors.invalidRequest(parsed.message);
    return parsed.value;
  }

  private offload(body: Buffer): Promise<ParsedBody> {
    const worker = this.start();
    const id = this.nextId++;
    // The body's memory moves to the worker (no copy) when the buffer owns all of it.
    const owned = body.byteOffset === 0 && body.byteLength === body.buffer.byteLength;
    const bytes = owned ? body : Buffer.from(body);
    return new Promise<ParsedBody>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ id, bytes }, [bytes.buffer as ArrayBuffer]);
    });
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(new URL("./json-body-worker.js", import.meta.url));
    worker.unref(); // never what keeps the process alive
    worker.on("message", ({ id, parsed }: { id: number; parsed: ParsedBody }) => {
      const p = this.pending.get(id);
      this.pending.delete(id);
      p?.resolve(parsed);
    });
    const fail = (err: Error) => {
      this.worker = null;
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    worker.on("error", fail);
    worker.on("exit", () => fail(new Error("the JSON body worker stopped")));
    this.worker = worker;
    return worker;
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = null;
    await w?.terminate();
  }
}
