import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { StopMatcher } from "../../src/engines/stop-sequences.js";

interface Run {
  /** Everything emitted, in order. */
  emitted: string;
  /** What each push emitted. */
  pieces: string[];
  stopped: boolean;
  /** What flush() returned (only when no stop sequence came). */
  flushed: string;
}

/** Streams `chunks` through a fresh matcher, as the engine does: stop pushing once a stop sequence is reached. */
function run(stops: string[], chunks: string[]): Run {
  const m = new StopMatcher(stops);
  const pieces: string[] = [];
  let stopped = false;
  for (const c of chunks) {
    const r = m.push(c);
    pieces.push(r.emit);
    if (r.stopped) {
      stopped = true;
      break;
    }
  }
  const flushed = stopped ? "" : m.flush();
  return { emitted: pieces.join("") + flushed, pieces, stopped, flushed };
}

/** Every way to cut `text` into two pieces, and into three pieces. */
function* splits(text: string): Generator<string[]> {
  for (let i = 0; i <= text.length; i++) yield [text.slice(0, i), text.slice(i)];
  for (let i = 0; i <= text.length; i++) {
    for (let j = i; j <= text.length; j++) yield [text.slice(0, i), text.slice(i, j), text.slice(j)];
  }
  yield [...text];
}

/** True when some non-empty prefix of a stop sequence appears in `s` (as a suffix or anywhere). */
function containsStopPart(s: string, stop: string): boolean {
  for (let n = 1; n <= stop.length; n++) if (s.includes(stop.slice(0, n))) return true;
  return false;
}

describe("StopMatcher", () => {
  test("without stop sequences, text passes through at once", () => {
    const m = new StopMatcher([]);
    assert.deepEqual(m.push("Hello"), { emit: "Hello", stopped: false });
    assert.deepEqual(m.push(" wor"), { emit: " wor", stopped: false });
    assert.deepEqual(m.push(""), { emit: "", stopped: false });
    assert.equal(m.flush(), "");
  });

  test("text that cannot start a stop sequence passes through at once", () => {
    const m = new StopMatcher(["STOP"]);
    assert.deepEqual(m.push("hello "), { emit: "hello ", stopped: false });
    assert.deepEqual(m.push("world"), { emit: "world", stopped: false });
    assert.equal(m.flush(), "");
  });

  test("a stop sequence inside one push: the text before it is emitted, the rest never", () => {
    const m = new StopMatcher(["\n\n"]);
    assert.deepEqual(m.push("first line\n\nsecond"), { emit: "first line", stopped: true });
  });

  test("a stop sequence at the very start emits nothing", () => {
    assert.deepEqual(new StopMatcher(["END"]).push("END and more"), { emit: "", stopped: true });
  });

  test("every split point: the same text, no part of the stop sequence, stopped", () => {
    const text = "Hello wor<|end|>ld and more";
    const stop = "<|end|>";
    for (const chunks of splits(text)) {
      const r = run([stop], chunks);
      const label = JSON.stringify(chunks);
      assert.equal(r.stopped, true, label);
      assert.equal(r.emitted, "Hello wor", label);
      // Also checked push by push: no emitted piece ever carried a part of the stop sequence.
      assert.ok(!containsStopPart(r.pieces.join(""), stop), label);
    }
  });

  test("every split point, several stop sequences: the earliest one wins", () => {
    // "lo w" starts at 3 and ends at 7, before "world" (6..11) completes; "xyz" never occurs.
    const text = "Hello world";
    for (const chunks of splits(text)) {
      const r = run(["world", "xyz", "lo w"], chunks);
      assert.equal(r.stopped, true, JSON.stringify(chunks));
      assert.equal(r.emitted, "Hel", JSON.stringify(chunks));
    }
  });

  test("several stop sequences present in the same push: the one that starts first wins, whatever the list order", () => {
    for (const stops of [
      ["cd", "bcde"],
      ["bcde", "cd"],
    ]) {
      assert.deepEqual(new StopMatcher(stops).push("abcdef"), { emit: "a", stopped: true });
    }
    // The held start of one stop sequence and a later, complete other one.
    const m = new StopMatcher(["abc", "x"]);
    assert.deepEqual(m.push("--ab"), { emit: "--", stopped: false });
    assert.deepEqual(m.push("cx"), { emit: "", stopped: true });
  });

  test("every split point, without a stop: all text comes out, held parts released", () => {
    const text = "a <|e and <|en and <|end| but never the whole <|";
    for (const chunks of splits(text)) {
      const r = run(["<|end|>"], chunks);
      assert.equal(r.stopped, false, JSON.stringify(chunks));
      assert.equal(r.emitted, text, JSON.stringify(chunks));
    }
  });

  test("a stop sequence split across pushes is held, never emitted even in part", () => {
    const m = new StopMatcher(["STOP"]);
    assert.deepEqual(m.push("go S"), { emit: "go ", stopped: false });
    assert.deepEqual(m.push("T"), { emit: "", stopped: false });
    assert.deepEqual(m.push("O"), { emit: "", stopped: false });
    assert.deepEqual(m.push("P now"), { emit: "", stopped: true });
  });

  test("held text that turns out not to be a stop is released with what follows", () => {
    const m = new StopMatcher(["STOP"]);
    assert.deepEqual(m.push("go ST"), { emit: "go ", stopped: false });
    assert.deepEqual(m.push("ART"), { emit: "START", stopped: false });
    assert.equal(m.flush(), "");
  });

  test("only the part that can still start a stop sequence is held", () => {
    // "aab": after "aaa" only "aa" can still start it.
    const m = new StopMatcher(["aab"]);
    assert.deepEqual(m.push("a"), { emit: "", stopped: false });
    assert.deepEqual(m.push("a"), { emit: "", stopped: false });
    assert.deepEqual(m.push("a"), { emit: "a", stopped: false });
    assert.deepEqual(m.push("b"), { emit: "", stopped: true });
  });

  test("overlapping candidates: a failed match does not hide a real one that starts inside it", () => {
    for (const chunks of splits("xababac")) {
      const r = run(["abac"], chunks);
      assert.equal(r.stopped, true, JSON.stringify(chunks));
      assert.equal(r.emitted, "xab", JSON.stringify(chunks));
    }
  });

  test("flush returns the held rest, once", () => {
    const m = new StopMatcher(["</answer>"]);
    assert.deepEqual(m.push("done </ans"), { emit: "done ", stopped: false });
    assert.equal(m.flush(), "</ans");
    assert.equal(m.flush(), "");
  });

  test("multi-byte text and a non-ASCII stop sequence", () => {
    const text = "café 😀 — fin¶ rest";
    for (const chunks of splits(text)) {
      const r = run(["fin¶"], chunks);
      assert.equal(r.stopped, true);
      assert.equal(r.emitted, "café 😀 — ", JSON.stringify(chunks));
    }
  });
});
