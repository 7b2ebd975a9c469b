import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { stripVTControlCharacters } from "node:util";
import { testModel } from "../helpers/models.js";
import { cliPath } from "../helpers/paths.js";
import { startServer, type RunningServer } from "../helpers/server.js";
import { until } from "../helpers/until.js";

const SCRIPT = "/usr/bin/script";

/** `lucena chat` in a pseudo-terminal (util-linux's script), against the real server. */
describe(
  "lucena chat",
  { skip: existsSync(SCRIPT) ? false : "util-linux's script (a pseudo-terminal) is absent" },
  () => {
    let server: RunningServer;
    before(async () => {
      server = await startServer({ model: testModel() });
    });
    after(async () => {
      await server.stop();
    });

    /** A chat session in a pseudo-terminal: what it wrote so far, and keys to type. */
    function session(args: string[]) {
      const cmd = [process.execPath, cliPath, "chat", "--url", server.url, ...args].join(" ");
      const child = spawn(SCRIPT, ["-qfec", cmd, "/dev/null"], {
        env: { ...process.env, LUCENA_API_KEY: server.key, TERM: "dumb" },
      });
      let out = "";
      child.stdout.on("data", (b: Buffer) => (out += b.toString()));
      const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
      return {
        text: () => stripVTControlCharacters(out).replace(/\r/g, ""),
        type: (keys: string) => child.stdin.write(keys),
        /** Waits until the prompt has come back `n` times. */
        prompts: (n: number) =>
          until(`prompt ${n}`, () => (stripVTControlCharacters(out).split(">>> ").length - 1 >= n ? true : undefined)),
        exited,
        kill: () => child.kill("SIGKILL"),
      };
    }

    const requests = (from: number) =>
      server.logs
        .slice(from)
        .filter((l) => l.includes('"msg":"request"') && l.includes("/v1/chat/completions"))
        .map((l) => JSON.parse(l) as { promptTokens: number; finish: string });

    test("streams answers turn after turn; /reset forgets; /system sets the system prompt; /exit leaves", async () => {
      const from = server.logs.length;
      const s = session(["--max-tokens", "4"]);
      try {
        await s.prompts(1);
        s.type("hello there\n");
        await s.prompts(2);
        s.type("and again\n");
        await s.prompts(3);
        s.type("/reset\n");
        await s.prompts(4);
        s.type("hello there\n");
        await s.prompts(5);
        s.type("/system Be brief.\n");
        await s.prompts(6);
        s.type("hello there\n");
        await s.prompts(7);
        s.type("/exit\n");
        assert.equal(await s.exited, 0);
        const [first, second, afterReset, withSystem] = await until("four requests logged", () => {
          const r = requests(from);
          return r.length >= 4 ? r : undefined;
        });
        assert.ok(second.promptTokens > first.promptTokens, "the second turn carries the first");
        assert.equal(afterReset.promptTokens, first.promptTokens, "after /reset, as the first turn");
        assert.notEqual(withSystem.promptTokens, first.promptTokens, "the system prompt replaces the default one");
        assert.match(s.text(), /\(the conversation is forgotten\)/);
        assert.match(s.text(), /\(system prompt set\)/);
      } finally {
        s.kill();
      }
    });

    test("Ctrl-C stops an answer and gives the prompt back; at an empty prompt it leaves", async () => {
      const from = server.logs.length;
      const s = session(["--max-tokens", "8000"]);
      try {
        await s.prompts(1);
        s.type("write forever\n");
        await until("the answer to stream", () => (s.text().split(">>> ")[1].length > 200 ? true : undefined));
        s.type("\x03");
        await s.prompts(2);
        assert.match(s.text(), /\[stopped\]/);
        const [stopped] = await until("the request logged", () => requests(from)[0] && requests(from));
        assert.equal(stopped.finish, "cancelled", "the server stopped generating");
        s.type("\x03");
        assert.equal(await s.exited, 0);
      } finally {
        s.kill();
      }
    });
  },
);
