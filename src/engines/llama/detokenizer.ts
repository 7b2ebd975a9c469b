/** What the detokenizer needs from a model (node-llama-cpp's LlamaModel has it). */
export interface TokenTextSource {
  detokenize(tokens: readonly number[], specialTokens?: boolean, lastTokens?: readonly number[]): string;
}

const REPLACEMENT = 0xfffd;
/** An unfinished UTF-8 character lacks at most 3 bytes, so at most 3 more tokens can complete it. */
const MAX_STALLED_PUSHES = 3;
/** Decoding the held run again on every token costs O(run²); a run this long is flushed as it is. */
const MAX_RUN = 64;
const CONTEXT_TOKENS = 4;

/**
 * Turns generated tokens into text without ever emitting half a UTF-8 character. Byte-level vocabularies have
 * tokens that end inside a character, and several such tokens may follow each other, so the detokenizer holds
 * the run of tokens since the last clean character boundary, decodes the run whole on each token, and emits
 * the part of it that is complete. UTF-8 is self-synchronising, so that part never changes as the run grows.
 * Bytes that no later token completes come out as U+FFFD (valid UTF-8) once they stop making progress.
 * The tokens before the run are passed as context, so SentencePiece vocabularies get their spacing right.
 */
export class IncrementalDetokenizer {
  private run: number[] = [];
  private context: number[] = [];
  /** Characters of the run's text already emitted. */
  private emitted = 0;
  private stalled = 0;

  constructor(
    private readonly model: TokenTextSource,
    /** Special tokens written as their text (a tool call's markers are special tokens in many vocabularies). */
    private readonly special = false,
  ) {}

  push(token: number): string {
    this.run.push(token);
    const text = this.model.detokenize(this.run, this.special, this.context);
    let complete = text.length;
    while (complete > 0 && text.charCodeAt(complete - 1) === REPLACEMENT) complete--;
    if (complete === text.length || this.run.length >= MAX_RUN) return this.finishRun(text);
    if (complete > this.emitted) {
      const out = text.slice(this.emitted, complete);
      this.emitted = complete;
      this.stalled = 0;
      return out;
    }
    if (++this.stalled > MAX_STALLED_PUSHES) return this.finishRun(text);
    return "";
  }

  /** Whatever is still held at the end of generation. */
  flush(): string {
    if (this.run.length === 0) return "";
    return this.finishRun(this.model.detokenize(this.run, this.special, this.context));
  }

  private finishRun(text: string): string {
    const out = text.slice(this.emitted);
    this.context = [...this.context, ...this.run].slice(-CONTEXT_TOKENS);
    this.run = [];
    this.emitted = 0;
    this.stalled = 0;
    return out;
  }
}
