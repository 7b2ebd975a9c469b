import assert from "node:assert/strict";
import { connect, createServer, type Socket } from "node:net";
import { describe, test } from "node:test";
import { lingerOnClose } from "../../src/server/transport.js";

/**
 * A server that answers before reading the request (a 413 on its Content-Length) and closes: the client is still
 * sending. Without a lingering close the socket is destroyed with data unread, the kernel resets the connection,
 * and the client's write fails (and an answer it has not read yet is lost).
 */
async function exchange(linger: boolean): Promise<{ answer: string; writeError: string | null; ended: boolean }> {
  const server = createServer((sock: Socket) => {
    sock.write("HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    if (linger) lingerOnClose(sock);
    sock.destroySoon(); // what Node's HTTP server calls after a `Connection: close` answer
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  try {
    return await new Promise((resolve) => {
      const client = connect(port, "127.0.0.1");
      let answer = "";
      let writeError: string | null = null;
      let ended = false;
      client.on("data", (d: Buffer) => (answer += d.toString()));
      client.on("end", () => (ended = true));
      client.on("error", (err: NodeJS.ErrnoException) => (writeError = err.code ?? err.message));
      client.on("close", () => resolve({ answer, writeError, ended }));
      client.end(Buffer.alloc(16 * 1024 * 1024, 0x61)); // the body the server will not read
    });
  } finally {
    server.close();
  }
}

describe("lingering close", () => {
  test("the client's body is drained and the answer arrives whole, with a clean end", async () => {
    const r = await exchange(true);
    assert.match(r.answer, /^HTTP\/1\.1 413/);
    assert.equal(r.writeError, null);
    assert.equal(r.ended, true);
  });

  test("without it, the same exchange is reset under the client's write", async () => {
    const r = await exchange(false);
    assert.ok(r.writeError === "ECONNRESET" || r.writeError === "EPIPE", `write error: ${r.writeError}`);
  });
});
