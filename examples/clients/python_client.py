#!/usr/bin/env python3
"""Follows an ssehub event stream with the Python 3 standard library only (tested with 3.11).

Prints each event as one JSON line {"id", "event", "data"} on stdout. Reconnects like
EventSource, resuming with Last-Event-ID after the server's `retry:` delay, and exits 0 when the
channel is closed (the hub answers 204) or after --max-events events. Connection problems are
reported on stderr.

    python3 examples/clients/python_client.py http://localhost:8080/events/news \\
        [--last-event-id ID] [--token JWT] [--max-events N]

The parser can be reused on its own: feed it bytes in any pieces, get whole events back.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import http.client
import json
import re
import sys
import time
import urllib.parse
from typing import Callable, NamedTuple

# Like Node's fetch: a stream silent this long is taken as dead (the hub's heartbeat, 15 s by
# default, keeps a healthy one busier).
IDLE_TIMEOUT_SECONDS = 300
# EventSource's usual delay before the server sent any `retry:`.
DEFAULT_RETRY_MS = 3000
LINE_END = re.compile(r"\r\n|\r|\n")
DIGITS = re.compile(r"[0-9]+")


class Event(NamedTuple):
    """One dispatched event, as EventSource would report it."""

    type: str
    data: str
    last_event_id: str


OnEvent = Callable[[Event], bool]
"""Gets each event; returning True stops following."""


class EventStreamParser:
    """Incremental text/event-stream parser (WHATWG HTML, "interpreting an event stream").

    Network reads end anywhere: inside a line, between the CR and LF of a line end, inside a
    UTF-8 character. The unfinished line, character and event are kept between reads.
    """

    def __init__(self, last_event_id: str = "") -> None:
        self.last_event_id = last_event_id
        self.retry_ms: int | None = None
        self.restart()

    def restart(self) -> None:
        """Forgets a half-read event: a new connection starts a new stream."""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._line = ""
        self._skip_lf = False
        self._started = False
        self._data: list[str] = []
        self._type = ""
        self._id = self.last_event_id

    def feed(self, chunk: bytes) -> list[Event]:
        """Parses `chunk` and returns the events it completed."""
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if not self._started:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        events: list[Event] = []
        start = 0
        for end in LINE_END.finditer(text):
            self._process_line(self._line + text[start : end.start()], events)
            self._line = ""
            start = end.end()
        self._line += text[start:]
        # A CR ending this piece ended a line; an LF starting the next belongs to it.
        self._skip_lf = text.endswith("\r")
        return events

    def _process_line(self, line: str, events: list[Event]) -> None:
        if not line:
            # The id counts only once its event is complete, so a stream cut in the middle of
            # an event resumes before it.
            self.last_event_id = self._id
            if self._data:
                events.append(Event(self._type or "message", "\n".join(self._data), self._id))
            self._data = []
            self._type = ""
            return
        if line.startswith(":"):
            return
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._type = value
        elif field == "id" and "\0" not in value:
            self._id = value
        elif field == "retry" and DIGITS.fullmatch(value):
            self.retry_ms = int(value)


class HttpError(Exception):
    """A non-2xx answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status} {reason}")
        self.status = status

    @property
    def retryable(self) -> bool:
        """The hub is busy, shutting down, or cannot reach Redis: try again later."""
        return self.status >= 500 or self.status in (408, 429)


def open_connection(url: urllib.parse.SplitResult) -> http.client.HTTPConnection:
    if url.scheme == "https":
        return http.client.HTTPSConnection(url.hostname, url.port, timeout=IDLE_TIMEOUT_SECONDS)
    return http.client.HTTPConnection(url.hostname, url.port, timeout=IDLE_TIMEOUT_SECONDS)


def follow(url: str, headers: dict[str, str], parser: EventStreamParser, on_event: OnEvent) -> None:
    """Reads `url` until the channel is closed (204), reconnecting with Last-Event-ID.

    `on_event(event)` returning True stops following; its exceptions propagate. Raises
    HttpError for answers that retrying cannot fix (400, 401, 403, 404...), as EventSource
    gives up on them too.
    """
    target = urllib.parse.urlsplit(url)
    path = (target.path or "/") + (f"?{target.query}" if target.query else "")
    while True:
        with contextlib.closing(open_connection(target)) as connection:
            if read_stream(connection, path, headers, parser, on_event):
                return
        delay = parser.retry_ms if parser.retry_ms is not None else DEFAULT_RETRY_MS
        time.sleep(delay / 1000)


def read_stream(
    connection: http.client.HTTPConnection,
    path: str,
    headers: dict[str, str],
    parser: EventStreamParser,
    on_event: OnEvent,
) -> bool:
    """Reads one connection's stream; True when following should stop."""
    sent = {"Accept": "text/event-stream", "Cache-Control": "no-cache", **headers}
    if parser.last_event_id:
        sent["Last-Event-ID"] = parser.last_event_id
    try:
        connection.request("GET", path, headers=sent)
        response = connection.getresponse()
    except (OSError, http.client.HTTPException) as err:
        warn(f"{type(err).__name__}: {err}; reconnecting")
        return False
    if response.status == 204:
        return True
    if response.status != 200:
        error = HttpError(response.status, response.reason)
        if not error.retryable:
            raise error
        warn(f"{error}; reconnecting")
        return False
    parser.restart()
    while True:
        try:
            chunk = response.read1(64 * 1024)
        except (OSError, http.client.HTTPException) as err:
            warn(f"{type(err).__name__}: {err}; reconnecting")
            return False
        if not chunk:
            return False  # the hub ended the stream: reconnect, resuming
        for event in parser.feed(chunk):
            if on_event(event):
                return True


def warn(message: str) -> None:
    print(f"python_client: {message}", file=sys.stderr, flush=True)


def positive_int(text: str) -> int:
    if not DIGITS.fullmatch(text) or int(text) == 0:
        raise argparse.ArgumentTypeError("wants a positive integer")
    return int(text)


def main() -> int:
    arguments = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    arguments.add_argument("url", help="events URL, e.g. http://localhost:8080/events/news")
    arguments.add_argument("--last-event-id", default="", help="resume after this event id")
    arguments.add_argument("--token", help="sent as Authorization: Bearer <token>")
    arguments.add_argument("--max-events", type=positive_int, help="exit after this many")
    options = arguments.parse_args()
    if urllib.parse.urlsplit(options.url).scheme not in ("http", "https"):
        arguments.error("the URL must start with http:// or https://")

    sys.stdout.reconfigure(encoding="utf-8")
    headers = {"Authorization": f"Bearer {options.token}"} if options.token else {}
    printed = 0

    def on_event(event: Event) -> bool:
        nonlocal printed
        line = {"id": event.last_event_id, "event": event.type, "data": event.data}
        print(json.dumps(line, ensure_ascii=False, separators=(",", ":")), flush=True)
        printed += 1
        return options.max_events is not None and printed >= options.max_events

    parser = EventStreamParser(options.last_event_id)
    try:
        follow(options.url, headers, parser, on_event)
    except HttpError as err:
        warn(f"{err} from {options.url}")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0  # the reader went away (`| head`)
    if options.max_events is not None and printed >= options.max_events:
        warn(f"stopped after {printed} events")
    else:
        warn("channel closed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
