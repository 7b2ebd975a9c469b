import type { ServerResponse } from "node:http";

let openStreams = 0;

/** SSE responses open right now in this process (the active-streams gauge). */
export function openStreamCount(): number {
  return openStreams;
}

/**
 * One Server-Sent Events response. Writes `: connected` as soon as it opens, a `: keepalive` comment after
 * `keepaliveMs` of silence, and waits for the socket to drain when the client reads slowly. Each event is
 * written whole (ending in a blank line) in a single write. The owner calls `close()` in `finally`.
 */
export class SseStream {
  private timer?: NodeJS.Timeout;
  private ended = false;
  private counted = false;

  constructor(
    private readonly res: ServerResponse,
    private readonly keepaliveMs: number,
  ) {}

  open(headers: Record<string, string | number | string[] | undefined>): void {
    this.res.writeHead(200, {
      ...headers,
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      connection: "keep-alive",
      "x-accel-buffering": "no", // tell nginx-style proxies not to buffer the stream
    });
    this.res.write(": connected\n\n");
    openStreams++;
    this.counted = true;
    this.timer = setTimeout(() => this.keepalive(), this.keepaliveMs);
    this.timer.unref();
  }

  /** False once the client has gone or the stream is closed. */
  get writable(): boolean {
    return !this.ended && !this.res.destroyed && this.res.writable;
  }

  /** Sends `data: <payload>`; resolves when the socket can take more. */
  async send(payload: string): Promise<void> {
    if (!this.writable) return;
    this.timer?.refresh();
    if (!this.res.write(`data: ${payload}\n\n`)) await this.drained();
  }

  /** Sends a named event (`event: <name>`, then its data), as the Responses API's stream does. */
  async event(e: { name: string; data: string }): Promise<void> {
    if (!this.writable) return;
    this.timer?.refresh();
    if (!this.res.write(`event: ${e.name}\ndata: ${e.data}\n\n`)) await this.drained();
  }

  /** Sends the `[DONE]` frame that ends an OpenAI-style stream. */
  done(): Promise<void> {
    return this.send("[DONE]");
  }

  /** Ends the stream with an error: its body as an event, then `[DONE]` (never a silently truncated stream). */
  async fail(errorBody: unknown): Promise<void> {
    await this.send(JSON.stringify(errorBody));
    await this.done();
  }

  private keepalive(): void {
    if (!this.writable) return;
    this.res.write(": keepalive\n\n");
    this.timer?.refresh();
  }

  private drained(): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        this.res.off("drain", done);
        this.res.off("close", done);
        resolve();
      };
      this.res.on("drain", done);
      this.res.on("close", done);
    });
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.counted) {
      this.counted = false;
      openStreams--;
    }
    if (this.ended) return;
    this.ended = true;
    if (!this.res.destroyed) this.res.end();
  }
}

/**
 * Runs `write` on an SSE response opened with `headers` (as hono's streamSSE does): whatever `write` throws is
 * told in the stream by `fail` (chat: the error's body and `[DONE]`), since the headers are out; the stream is
 * closed whatever happens.
 */
export async function streamSse(
  res: ServerResponse,
  headers: Record<string, string | number | string[] | undefined>,
  keepaliveMs: number,
  write: (sse: SseStream) => Promise<void>,
  fail: (err: unknown, sse: SseStream) => Promise<void>,
): Promise<void> {
  const sse = new SseStream(res, keepaliveMs);
  sse.open(headers);
  try {
    await write(sse);
  } catch (err) {
    await fail(err, sse);
  } finally {
    sse.close();
  }
}
