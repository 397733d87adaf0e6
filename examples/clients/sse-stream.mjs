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
    this.idBuffer = "";       // `id:` of the event being read, committed at its blank line
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

  /** Forgets a half-read event (a new connection starts a new stream); keeps the ids and retry. */
  restart() {
    Object.assign(this, { line: "", skipLf: false, started: false, data: [], type: "" });
    this.idBuffer = this.lastEventId;
  }

  #processLine(line, events) {
    if (line === "") {
      // The id counts only once its event is complete: a stream cut after `id:` but before
      // the blank line must resume before that event, not after it.
      this.lastEventId = this.idBuffer;
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
    else if (field === "id" && !value.includes("\0")) this.idBuffer = value;
    else if (field === "retry" && /^[0-9]+$/.test(value)) this.retry = Number(value);
  }
}

/**
 * Yields the events of a fetch `Response` whose body is an event stream, until the stream
 * ends. `parser` (optional) lets the caller read `lastEventId` and `retry` afterwards to
 * reconnect the way EventSource would. Leaving the loop early closes the connection.
 */
export async function* readEvents(response, parser = new EventStreamParser()) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let finished = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        finished = true;
        return;
      }
      yield* parser.feed(value);
    }
  } finally {
    // Without this a consumer that stops early keeps the connection (one of the browser's
    // six per host on HTTP/1.1) open until garbage collection.
    if (!finished) reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}

/** A non-2xx answer; `status` is the HTTP status. */
export class HttpError extends Error {
  constructor(status, url) {
    super(`HTTP ${status} from ${url}`);
    this.status = status;
  }

  /** Worth retrying: the hub is busy, shutting down, or cannot reach Redis. */
  get retryable() {
    return this.status >= 500 || this.status === 408 || this.status === 429;
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * Follows `url` like EventSource, with fetch: sends `Last-Event-ID` on every reconnect, waits
 * the server's `retry:` between attempts, and stops on `204 No Content` (a closed channel,
 * resolves "closed") or when `signal` aborts (resolves "aborted"). `onEvent` gets each event
 * once, in order. Network errors and 5xx/408/429 answers are retried, each reported to
 * `onError`; any other status rejects with an `HttpError`, as EventSource gives up on them
 * too. An exception thrown by `onEvent` or `onOpen` rejects as well.
 */
export async function follow(url, { headers = {}, signal, onEvent, onOpen, onError, lastEventId = "" } = {}) {
  const parser = new EventStreamParser();
  parser.lastEventId = lastEventId;
  for (;;) {
    const sent = { ...headers, accept: "text/event-stream" };
    if (parser.lastEventId) sent["last-event-id"] = parser.lastEventId;
    let inCallback = false;
    try {
      const response = await fetch(url, { headers: sent, signal, cache: "no-store" });
      if (response.status === 204) return "closed";
      if (!response.ok) {
        response.body?.cancel().catch(() => {});
        throw new HttpError(response.status, url);
      }
      inCallback = true;
      if (onOpen) onOpen(response);
      inCallback = false;
      parser.restart();
      for await (const event of readEvents(response, parser)) {
        if (signal?.aborted) return "aborted";
        inCallback = true;
        onEvent(event);
        inCallback = false;
      }
    } catch (err) {
      if (inCallback || (err instanceof HttpError && !err.retryable)) throw err;
      if (signal?.aborted) return "aborted";
      if (onError) onError(err);
    }
    await sleep(parser.retry ?? 3000, signal);
    if (signal?.aborted) return "aborted";
  }
}
