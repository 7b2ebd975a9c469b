import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { availableParallelism, totalmem } from "node:os";
import { join } from "node:path";

export interface Machine {
  cpu: string;
  cores: number;
  avx512: boolean;
  ram_gb: number;
  os: string;
  node: string;
  node_llama_cpp: string;
  commit: string | null;
  date: string;
}

function readOr(path: string, fallback: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return fallback;
  }
}

export function describeMachine(repoRoot: string): Machine {
  const cpuinfo = readOr("/proc/cpuinfo", "");
  const cpu = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? "unknown";
  const flags = /^flags\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? "";
  const pkg = JSON.parse(readOr(join(repoRoot, "node_modules", "node-llama-cpp", "package.json"), "{}")) as {
    version?: string;
  };
  let commit: string | null = null;
  try {
    commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], {
      cwd: repoRoot,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    }).trim();
  } catch {
    /* not a git checkout */
  }
  const osRelease = /^PRETTY_NAME="?([^"\n]+)"?$/m.exec(readOr("/etc/os-release", ""))?.[1] ?? process.platform;
  return {
    cpu,
    cores: availableParallelism(),
    avx512: /\bavx512f\b/.test(flags),
    ram_gb: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    os: `${osRelease} (${process.arch})`,
    node: process.version,
    node_llama_cpp: pkg.version ?? "unknown",
    commit,
    date: new Date().toISOString(),
  };
}
