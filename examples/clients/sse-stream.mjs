// Reading an event stream with fetch instead of EventSource (browsers and Node 18+).
//
// fetch can send headers EventSource cannot (Authorization, Last-Event-ID on the first
// request), but then the page must parse the stream itself. Network chunks end anywhere: in
// the middle of a line, between the CR and LF of a line end, inside a UTF-8 character. So
// `chunk.split('\n')` loses or corrupts events; this parser keeps the unfinished line and
// event between chunks, as the WHATWG HTML "interpreting an event stream" algorithm says.

/** Incremental text/event-stream parser: feed text in any pieces, get whole events back. */
export class EventStreamParser {
  constructor() {
    this.line = "";           // the unfinished line
    this.skipLf = false;      // the last piece ended with CR: a leading LF belongs to it
    this.started = false;     // a leading BOM is dropped once
    this.data = [];
    this.type = "";
    this.lastEventId = "";    // persists across events, like EventSource's
    this.retry = null;        // last valid `retry:` in ms
  }

  /** Parses `text` and returns the events it completed: `{type, data, lastEventId}`. */
  feed(text) {
    if (!this.started && text.length > 0) {
      this.started = true;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    const events = [];
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c === 10 && this.skipLf && i === start) {
        this.skipLf = false;
        start = i + 1;
        continue;
      }
      this.skipLf = false;
      if (c !== 10 && c !== 13) continue;
      this.line += text.slice(start, i);
      this.#processLine(this.line, events);
      this.line = "";
      start = i + 1;
      if (c === 13) {
        if (i + 1 < text.length) {
          if (text.charCodeAt(i + 1) === 10) { i++; start = i + 1; }
        } else {
          this.skipLf = true;
        }
      }
    }
    this.line += text.slice(start);
    return events;
  }

  #processLine(line, events) {
    if (line === "") {
      if (this.data.length > 0) {
        events.push({
          type: this.type || "message",
          data: this.data.join("\n"),
          lastEventId: this.lastEventId,
        });
      }
      this.data = [];
      this.type = "";
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.type = value;
    else if (field === "id" && !value.includes("\0")) this.lastEventId = value;
    else if (field === "retry" && /^[0-9]+$/.test(value)) this.retry = Number(value);
  }
}

/**
 * Yields the events of a fetch `Response` whose body is an event stream, until the stream
 * ends. `parser` (optional) lets the caller read `lastEventId` and `retry` afterwards to
 * reconnect the way EventSource would.
 */
export async function* readEvents(response, parser = new EventStreamParser()) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      yield* parser.feed(value);
    }
  } finally {
    reader.releaseLock();
  }
}

/**
 * Follows `url` like EventSource, with fetch: sends `Last-Event-ID` on every reconnect, waits
 * the server's `retry:` between attempts, and stops on `204 No Content` (a closed channel) or
 * when `signal` aborts. `onEvent` gets each event once, in order.
 */
export async function follow(url, { headers = {}, signal, onEvent, onOpen, lastEventId = "" } = {}) {
  const parser = new EventStreamParser();
  parser.lastEventId = lastEventId;
  for (;;) {
    const sent = { ...headers, accept: "text/event-stream" };
    if (parser.lastEventId) sent["last-event-id"] = parser.lastEventId;
    try {
      const response = await fetch(url, { headers: sent, signal, cache: "no-store" });
      if (response.status === 204) return "closed";
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      if (onOpen) onOpen(response);
      // A fresh connection starts a fresh stream: drop any half-read event.
      Object.assign(parser, { line: "", skipLf: false, started: false, data: [], type: "" });
      for await (const event of readEvents(response, parser)) onEvent(event);
    } catch (err) {
      if (signal?.aborted) return "aborted";
    }
    await new Promise((resolve) => setTimeout(resolve, parser.retry ?? 3000));
    if (signal?.aborted) return "aborted";
  }
}
