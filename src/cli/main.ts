#!/usr/bin/env node
import { Command, InvalidArgumentError, Option } from "commander";
import { keysCommand } from "./keys.js";
import { modelsCommand, pullCommand } from "./models.js";
import { chatCommand } from "./chat.js";
import { makeModelCommand } from "./make-model.js";
import { serveCommand } from "./serve.js";
import { packageVersion } from "../config/version.js";

function port(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new InvalidArgumentError("a port is an integer from 0 to 65535");
  return n;
}

/** An integer option of at least `min`. */
function count(min: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`an integer of at least ${min}`);
    return n;
  };
}

// llama.cpp's server spells its parallel-sequences flag -np, two letters after one dash, which no option parser
// reads as one short flag: it is taken as --parallel.
const argv = process.argv.map((a) =>
  a === "-np" ? "--parallel" : a.startsWith("-np=") ? `--parallel=${a.slice(4)}` : a,
);

const program = new Command()
  .name("lucena")
  .version(packageVersion(), "-v, --version", "print the version")
  .description("Lucena One: a self-hosted, OpenAI-style LLM API server with an embedded llama.cpp engine")
  .showHelpAfterError();

program
  .command("serve")
  .description("serve the Lucena One API")
  .option("--port <n>", "port to listen on (default 8080)", port)
  .option("--host <host>", "address to listen on (default 127.0.0.1)")
  .option("--model <path|uri>", "GGUF file or hub URI for the default model (default: the demo model)")
  .option("--config <file>", "JSON configuration file")
  .option("--data-dir <dir>", "where models, keys and usage live (default ./data)")
  .option("--tls-cert <file>", "PEM certificate: serve HTTPS (with --tls-key)")
  .option("--tls-key <file>", "PEM private key for --tls-cert")
  .option("--http-port <n>", "with TLS, a plain-HTTP port that redirects to HTTPS", port)
  .option("--ops-port <n>", "port of the loopback operations listener (health, metrics; default 9464)", port)
  .option("-t, --threads <n>", "the first model's engine threads (0: the server's choice)", count(0))
  .option("-c, --ctx-size <n>", "the first model's context size per sequence, in tokens", count(64))
  .option("--parallel <n>", "the first model's sequences decoded in parallel (-np, as llama.cpp's)", count(1))
  .option("--log-level <level>", "fatal, error, warn, info, debug, trace or silent (default info)")
  .option("--log-format <format>", "auto (lines for people on a terminal, JSON elsewhere), json or pretty")
  .option(
    "--upstream <urls>",
    "serve the default model from these OpenAI-compatible servers (comma-separated base URLs)",
  )
  .option(
    "--upstream-key <key>",
    "the upstream servers' API key (or set LUCENA_UPSTREAM_KEY, which stays out of the process list)",
  )
  .action(serveCommand);

program.addCommand(keysCommand());
program.addCommand(pullCommand());
program.addCommand(modelsCommand());
program.addCommand(chatCommand());

program
  .command("make-model")
  .description("write a llama-architecture GGUF model with random weights, for tests, benchmarks and demos")
  .requiredOption("--out <file>", "where to write the model")
  .option("--vocab <file>", "copy the tokenizer of this GGUF (a vocabulary-only file is enough)")
  .addOption(
    new Option("--size <size>", "tiny: loads in milliseconds; small: ~19M parameters; bench: ~0.43B parameters, Q8_0")
      .choices(["tiny", "small", "bench"])
      .default("tiny"),
  )
  .option("--seed <n>", "seed for the weights", (v) => Number.parseInt(v, 10), 1234)
  .action(makeModelCommand);

await program.parseAsync(argv);
