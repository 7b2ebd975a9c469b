import type { ChatMessage } from "../api/chat-request.js";
import type { ItemLookup } from "../api/responses-request.js";

interface Kept {
  conversation: readonly ChatMessage[];
  items: ReadonlyMap<string, ChatMessage>;
  size: number;
}

/**
 * Recent Responses API answers, kept in memory so that a later request may name them: `previous_response_id`
 * (the conversation goes on from that answer) and `item_reference` input items (the Vercel AI SDK sends
 * earlier assistant text that way by default). Kept per key: a key sees only its own. Bounded by count and by
 * the size of what is kept; the oldest go first, and everything goes on restart (docs/api.md, "POST
 * /v1/responses").
 */
export class ResponseStore {
  private readonly responses = new Map<string, Kept>();
  private readonly items = new Map<string, ChatMessage>();
  private size = 0;

  constructor(
    private readonly maxResponses = 1000,
    /** Characters of kept text (JSON), all responses together. */
    private readonly maxChars = 32 * 1024 * 1024,
  ) {}

  /** Keeps an answer: the conversation it ends (its input and output), and its output items by id. */
  put(owner: string, id: string, conversation: readonly ChatMessage[], items: ReadonlyMap<string, ChatMessage>): void {
    const size = JSON.stringify(conversation).length;
    if (size > this.maxChars) return;
    this.responses.set(key(owner, id), { conversation, items, size });
    for (const [itemId, item] of items) this.items.set(key(owner, itemId), item);
    this.size += size;
    while (this.responses.size > this.maxResponses || this.size > this.maxChars) this.dropOldest();
  }

  /** What `owner` (a key's id) may name. */
  lookup(owner: string): ItemLookup {
    return {
      response: (id) => this.responses.get(key(owner, id))?.conversation,
      item: (id) => this.items.get(key(owner, id)),
    };
  }

  get count(): number {
    return this.responses.size;
  }

  private dropOldest(): void {
    const [oldest, kept] = this.responses.entries().next().value as [string, Kept];
    this.responses.delete(oldest);
    const owner = oldest.slice(0, oldest.indexOf("\u0000"));
    for (const itemId of kept.items.keys()) this.items.delete(key(owner, itemId));
    this.size -= kept.size;
  }
}

const key = (owner: string, id: string) => `${owner}\u0000${id}`;
