import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { checkUnsupported, type ChatMessage } from "../../api/chat-request.js";
import {
  callItemId,
  messageItemId,
  outputText,
  ResponseEvents,
  responseId,
  responseObject,
  responseUsage,
  type FunctionCallItem,
  type MessageItem,
  type OutputItem,
  type ResponseRequestEcho,
  type ResponseState,
} from "../../api/response-objects.js";
import { asResponsesError, ResponsesBodySchema, toChatBody, type ResponsesBody } from "../../api/responses-request.js";
import { toolCallId, type WireFinishReason } from "../../api/responses.js";
import type { LucenaError } from "../../core/errors.js";
import {
  consume,
  endStream,
  endWhole,
  serveCompletion,
  streamFailure,
  type CompletionRouteOptions,
  type Run,
} from "../completion-flow.js";
import { httpError } from "../http-errors.js";
import type { ResponseStore } from "../response-store.js";
import { streamSse, type SseStream } from "../sse.js";
import { resolveChat } from "../../prompt/resolve.js";

/**
 * POST /v1/responses: OpenAI's Responses API on the same prompt builder, engine, limits and ledger as chat
 * completions (completion-flow.ts); only the request is read differently (api/responses-request.ts) and the
 * answer written as a `response` object or its stream of typed events.
 */
export function responsesRoute(app: FastifyInstance, opts: CompletionRouteOptions & { store: ResponseStore }): void {
  app.post<{ Body: ResponsesBody }>("/v1/responses", { schema: { body: ResponsesBodySchema } }, async (req, reply) => {
    const body = req.body;
    const owner = req.principal?.keyId ?? "";
    // The translation names the Responses fields itself; what the chat path checks after it is renamed.
    const { chat, messages } = toChatBody(body, opts.store.lookup(owner));
    try {
      checkUnsupported(chat);
      const model = opts.registry.chat(body.model, req.principal);
      const stream = opts.alwaysStream || body.stream === true;
      const state: ResponseState = {
        id: responseId(),
        created_at: Math.floor(Date.now() / 1000),
        status: "in_progress",
        output: [],
        usage: null,
        error: null,
      };
      const keep = body.store !== false;
      const echo = requestEcho(body, model.config.temperature, keep);
      const answer = new Answer(state);
      const resolve = () => resolveChat(model.config, model.engine, chat, "completion");
      await serveCompletion(req, reply, opts, model, resolve, stream, async (run) => {
        if (stream) await streamResponse(req, reply, opts.keepaliveMs, run, answer, echo);
        else await jsonResponse(reply, run, answer, echo);
        if (keep && (state.status === "completed" || state.status === "incomplete"))
          opts.store.put(owner, state.id, [...messages, ...answer.asMessages()], answer.itemsById());
      });
    } catch (err) {
      throw asResponsesError(err);
    }
    return reply;
  });
}

function requestEcho(body: ResponsesBody, defaultTemperature: number, store: boolean): ResponseRequestEcho {
  const raw = body as Record<string, unknown>;
  return {
    model: body.model,
    instructions: body.instructions ?? null,
    max_output_tokens: body.max_output_tokens ?? null,
    temperature: body.temperature ?? defaultTemperature,
    top_p: body.top_p ?? 0.95,
    tools: body.tools ?? [],
    tool_choice: raw.tool_choice ?? "auto",
    parallel_tool_calls: body.parallel_tool_calls !== false,
    text: { format: body.text?.format ?? { type: "text" } },
    previous_response_id: body.previous_response_id ?? null,
    store,
    metadata: body.metadata ?? {},
    user: typeof raw.user === "string" ? raw.user : null,
  };
}

/**
 * The answer's output items as the engine's events build them: text goes into one message item, each call into a
 * function_call item after it. Both writers use it; the stream tells each step as an event.
 */
class Answer {
  private message: MessageItem | null = null;
  private readonly calls = new Map<number, FunctionCallItem>();

  constructor(readonly state: ResponseState) {}

  /** The message item text goes into, and whether it was just opened. */
  text(): { item: MessageItem; opened: boolean; index: number } {
    if (this.message) return { item: this.message, opened: false, index: this.state.output.indexOf(this.message) };
    this.message = {
      type: "message",
      id: messageItemId(),
      status: "in_progress",
      role: "assistant",
      content: [{ type: "output_text", text: "", annotations: [], logprobs: [] }],
    };
    this.state.output.push(this.message);
    return { item: this.message, opened: true, index: this.state.output.length - 1 };
  }

  /** The function_call item of call `index`, and whether it was just opened. */
  call(index: number, name: string): { item: FunctionCallItem; opened: boolean; index: number } {
    const known = this.calls.get(index);
    if (known) return { item: known, opened: false, index: this.state.output.indexOf(known) };
    const item: FunctionCallItem = {
      type: "function_call",
      id: callItemId(),
      call_id: toolCallId(),
      name,
      arguments: "",
      status: "in_progress",
    };
    this.calls.set(index, item);
    this.state.output.push(item);
    return { item, opened: true, index: this.state.output.length - 1 };
  }

  /** Ends the answer: every item takes the response's status. */
  finish(finish: WireFinishReason, promptTokens: number, completionTokens: number): void {
    const status = finish === "length" ? "incomplete" : "completed";
    for (const item of this.state.output) item.status = status;
    this.state.status = status;
    this.state.usage = responseUsage(promptTokens, completionTokens);
  }

  /** The answer as the conversation's assistant message (for a later previous_response_id). */
  asMessages(): ChatMessage[] {
    const calls = [...this.calls.values()].map((c) => ({
      id: c.call_id,
      type: "function" as const,
      function: { name: c.name, arguments: c.arguments },
    }));
    const content = outputText(this.state.output);
    return [calls.length > 0 ? { role: "assistant", content, tool_calls: calls } : { role: "assistant", content }];
  }

  /** Each output item as the message it is in a conversation (for a later item_reference). */
  itemsById(): Map<string, ChatMessage> {
    const out = new Map<string, ChatMessage>();
    for (const item of this.state.output) {
      if (item.type === "message") out.set(item.id, { role: "assistant", content: item.content[0]!.text });
      else
        out.set(item.id, {
          role: "assistant",
          content: "",
          tool_calls: [
            { id: item.call_id, type: "function", function: { name: item.name, arguments: item.arguments } },
          ],
        });
    }
    return out;
  }
}

async function jsonResponse(reply: FastifyReply, run: Run, answer: Answer, echo: ResponseRequestEcho): Promise<void> {
  const { outcome, charge } = run;
  const finish = await consume(
    run,
    (text, tokens, logprobs) => {
      charge.text(tokens, false); // delivered only with the whole answer
      const part = answer.text().item.content[0]!;
      part.text += text;
      if (logprobs) part.logprobs.push(...logprobs);
    },
    (piece) => {
      charge.text(piece.tokens, false);
      answer.call(piece.index, piece.name ?? "").item.arguments += piece.arguments ?? "";
    },
  );
  const end = endWhole(reply, run, finish);
  if (end === null) return;
  answer.finish(end, outcome.promptTokens, outcome.completionTokens);
  reply.send(responseObject(answer.state, echo));
}

/**
 * OpenAI's event sequence: response.created, response.in_progress; per item output_item.added, then (a message)
 * content_part.added, output_text.delta…, output_text.done, content_part.done, or (a call)
 * function_call_arguments.delta…, function_call_arguments.done; output_item.done; then response.completed (or
 * response.incomplete at max_output_tokens). A failure after the headers: an `error` event, then
 * response.failed.
 */
async function streamResponse(
  req: FastifyRequest,
  reply: FastifyReply,
  keepaliveMs: number,
  run: Run,
  answer: Answer,
  echo: ResponseRequestEcho,
): Promise<void> {
  const { outcome, charge } = run;
  const state = answer.state;
  const events = new ResponseEvents();
  const snapshot = () => responseObject(state, echo);
  /** The item whose events are open (text or a call's arguments still coming). */
  let open: OutputItem | null = null;
  const close = async (sse: SseStream) => {
    const item = open;
    if (!item) return;
    open = null;
    const output_index = state.output.indexOf(item);
    if (item.type === "message") {
      const part = item.content[0]!;
      await sse.event(
        events.event("response.output_text.done", {
          item_id: item.id,
          output_index,
          content_index: 0,
          text: part.text,
          logprobs: part.logprobs,
        }),
      );
      await sse.event(
        events.event("response.content_part.done", { item_id: item.id, output_index, content_index: 0, part }),
      );
    } else {
      await sse.event(
        events.event("response.function_call_arguments.done", {
          item_id: item.id,
          output_index,
          name: item.name,
          arguments: item.arguments,
        }),
      );
    }
    await sse.event(
      events.event("response.output_item.done", { output_index, item: { ...item, status: "completed" } }),
    );
  };
  reply.hijack();
  await streamSse(
    reply.raw,
    reply.getHeaders(),
    keepaliveMs,
    async (sse) => {
      await sse.event(events.event("response.created", { response: snapshot() }));
      await sse.event(events.event("response.in_progress", { response: snapshot() }));
      const finish = await consume(
        run,
        async (text, tokens, logprobs) => {
          charge.text(tokens, sse.writable); // the ledger is ahead of the client before the text goes out
          const { item, opened, index } = answer.text();
          if (opened) {
            await close(sse);
            open = item;
            await sse.event(
              events.event("response.output_item.added", { output_index: index, item: { ...item, content: [] } }),
            );
            await sse.event(
              events.event("response.content_part.added", {
                item_id: item.id,
                output_index: index,
                content_index: 0,
                part: { type: "output_text", text: "", annotations: [], logprobs: [] },
              }),
            );
          }
          item.content[0]!.text += text;
          if (logprobs) item.content[0]!.logprobs.push(...logprobs);
          await sse.event(
            events.event("response.output_text.delta", {
              item_id: item.id,
              output_index: index,
              content_index: 0,
              delta: text,
              logprobs: logprobs ?? [],
            }),
          );
        },
        async (piece) => {
          charge.text(piece.tokens, sse.writable);
          const { item, opened, index } = answer.call(piece.index, piece.name ?? "");
          if (opened) {
            await close(sse);
            open = item;
            await sse.event(events.event("response.output_item.added", { output_index: index, item: { ...item } }));
          }
          if (piece.arguments) {
            item.arguments += piece.arguments;
            await sse.event(
              events.event("response.function_call_arguments.delta", {
                item_id: item.id,
                output_index: index,
                delta: piece.arguments,
              }),
            );
          }
        },
      );
      const end = await endStream(run, finish, (err) => failed(sse, err));
      if (end === null) return;
      answer.finish(end, outcome.promptTokens, outcome.completionTokens);
      await close(sse);
      const type = state.status === "incomplete" ? "response.incomplete" : "response.completed";
      await sse.event(events.event(type, { response: snapshot() }));
    },
    (err, sse) => failed(sse, asResponsesError(streamFailure(req, run, err)) as LucenaError),
  );

  /** After the headers, a failure is told as OpenAI's stream tells it: an `error` event, then response.failed. */
  async function failed(sse: SseStream, err: LucenaError): Promise<void> {
    const { type } = (httpError(err).body as { error: { type: string } }).error;
    await sse.event(events.event("error", { code: type, message: err.message, param: err.param }));
    state.status = "failed";
    state.error = { code: type, message: err.message };
    state.usage = responseUsage(outcome.promptTokens, outcome.completionTokens);
    await sse.event(events.event("response.failed", { response: snapshot() }));
  }
}
