/** What the detokenizer needs from a model (node-llama-cpp's LlamaModel has it). */
export interface TokenTextSource {
  detokenize(tokens: readonly number[], specialTokens?: boolean, lastTokens?: readonly number[]): string;
}

const REPLACEMENT = "\uFFFD";
/** A UTF-8 character is at most 4 bytes, so at most 4 byte tokens; past that the bytes are invalid anyway. */
const MAX_PENDING = 4;
const CONTEXT_TOKENS = 4;

/**
 * Turns generated tokens into text without ever emitting half a UTF-8 character: a token whose text ends in an
 * incomplete character is held until the following tokens complete it. The tokens before it are passed as
 * context so tokenizers that mark word starts (SentencePiece) produce the right spacing.
 */
export class IncrementalDetokenizer {
  private pending: number[] = [];
  private context: number[] = [];

  constructor(private readonly model: TokenTextSource) {}

  push(token: number): string {
    this.pending.push(token);
    const text = this.model.detokenize(this.pending, false, this.context);
    if (text.endsWith(REPLACEMENT) && this.pending.length < MAX_PENDING) return "";
    return this.take(text);
  }

  /** Whatever is still held at the end (invalid bytes come out as U+FFFD, which is valid UTF-8). */
  flush(): string {
    if (this.pending.length === 0) return "";
    return this.take(this.model.detokenize(this.pending, false, this.context));
  }

  private take(text: string): string {
    this.context = [...this.context, ...this.pending].slice(-CONTEXT_TOKENS);
    this.pending = [];
    return text;
  }
}
