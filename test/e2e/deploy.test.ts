import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { DockerfileParser } from "dockerfile-ast";
import { repoRoot } from "../helpers/paths.js";

/**
 * The deployment files: the Dockerfile checked as a linter would (parsed with dockerfile-ast, the parser of
 * VS Code's Dockerfile support), since no Docker engine runs here to build it; the systemd unit by
 * systemd-analyze where it is installed. Where a Docker engine answers, the image is built and its health check
 * run too.
 */

const dockerfile = () => DockerfileParser.parse(readFileSync(join(repoRoot, "Dockerfile"), "utf8"));

describe("Dockerfile", () => {
  test("multi-stage; the run stage has no compilers, runs as a user, keeps /data, exposes both ports", () => {
    const d = dockerfile();
    const froms = d.getFROMs();
    assert.ok(froms.length >= 2, "a build stage and a run stage");
    assert.equal(froms[0].getBuildStage(), "build");
    const instructions = d.getInstructions();
    const runStart = instructions.indexOf(froms.at(-1)!);
    const run = instructions.slice(runStart);
    const keyword = (k: string) => run.filter((i) => i.getKeyword() === k);
    const user = keyword("USER").at(-1);
    assert.ok(user, "the run stage sets a USER");
    assert.notEqual(user.getArgumentsContent(), "root");
    assert.ok(run.indexOf(user) < run.indexOf(keyword("ENTRYPOINT")[0]), "the user is set before the entry point");
    assert.match(keyword("VOLUME")[0]?.getArgumentsContent() ?? "", /\/data/);
    assert.deepEqual(
      keyword("EXPOSE")
        .flatMap((i) => i.getArguments().map((a) => a.getValue()))
        .sort(),
      ["8080", "9464"],
    );
    assert.ok(keyword("HEALTHCHECK").length === 1, "a health check (the operations listener's /health)");
    for (const r of keyword("RUN")) assert.doesNotMatch(r.getArgumentsContent() ?? "", /g\+\+|make|python3/);
    // Every COPY --from names an earlier stage; nothing is fetched with ADD.
    const stages = froms.map((f) => f.getBuildStage()).filter(Boolean);
    for (const c of d.getCOPYs()) {
      const from = c.getFromFlag()?.getValue();
      if (from) assert.ok(stages.includes(from), `COPY --from=${from}`);
    }
    assert.equal(instructions.filter((i) => i.getKeyword() === "ADD").length, 0);
    // The entry point in exec form: the server is PID 1 and gets SIGTERM (drain) and SIGHUP (reload) itself.
    assert.match(keyword("ENTRYPOINT")[0].getArgumentsContent() ?? "", /^\[/);
  });

  test("the build context leaves out node_modules, dist, data and the ledger", () => {
    const ignored = readFileSync(join(repoRoot, ".dockerignore"), "utf8").split("\n");
    for (const p of ["node_modules", "dist", "data"]) assert.ok(ignored.includes(p), p);
  });

  const docker = spawnSync("docker", ["info"], { encoding: "utf8" });
  test(
    "the image builds, and its server runs in it",
    { skip: docker.status === 0 ? false : "no Docker engine answers here: the Dockerfile is checked above instead" },
    () => {
      const build = spawnSync("docker", ["build", "-q", "-t", "lucena-one-test", repoRoot], { encoding: "utf8" });
      assert.equal(build.status, 0, build.stderr);
      const run = spawnSync(
        "docker",
        ["run", "--rm", "--entrypoint", "node", "lucena-one-test", "dist/src/cli/main.js", "--version"],
        { encoding: "utf8" },
      );
      assert.equal(run.status, 0, run.stderr);
    },
  );
});

describe("systemd unit", () => {
  const unit = readFileSync(join(repoRoot, "deploy", "lucena.service"), "utf8");
  test("reload is SIGHUP, stop is SIGTERM with time to drain, a bad configuration is not restarted", () => {
    assert.match(unit, /^ExecReload=\/bin\/kill -HUP \$MAINPID$/m);
    assert.match(unit, /^KillSignal=SIGTERM$/m);
    assert.ok(Number(/^TimeoutStopSec=(\d+)$/m.exec(unit)?.[1]) > 30, "longer than shutdown_grace_seconds");
    assert.match(unit, /^RestartPreventExitStatus=2$/m);
    assert.match(unit, /^User=lucena$/m);
  });

  const analyze = spawnSync("systemd-analyze", ["--version"]);
  test(
    "systemd-analyze verify finds nothing wrong",
    { skip: analyze.error ? "systemd-analyze is not installed" : false },
    () => {
      const res = spawnSync("systemd-analyze", ["verify", join(repoRoot, "deploy", "lucena.service")], {
        encoding: "utf8",
      });
      // It cannot know this machine's /opt/lucena or user: only the unit's own syntax is judged.
      const problems = res.stderr
        .split("\n")
        .filter((l) => l.trim() && !/not found|No such file|does not exist|Failed to resolve user/i.test(l));
      assert.deepEqual(problems, [], res.stderr);
    },
  );
});
