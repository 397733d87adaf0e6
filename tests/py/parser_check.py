"""Checks the EventStreamParser of examples/clients/python_client.py against a stream cut at
every byte and every pair of bytes (between CR and LF, inside UTF-8 characters...): each way
must give exactly the events of the whole stream. The same input as tests/js/parser-check.mjs.

Run by tests/clients.rs (`python3 tests/py/parser_check.py`); exits non-zero on a mismatch and
prints one JSON summary line on success.
"""

import json
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ left in examples/
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples", "clients"))

from python_client import Event, EventStreamParser  # noqa: E402

# Every line-end kind, a BOM, comments, `retry:`, multi-line and empty data, a field without a
# colon, 2-, 3- and 4-byte UTF-8, an id-only block, and an unfinished event at the end whose id
# must not count yet (a reconnect would skip it).
TRICKY = (
    "\ufeffdata: after the BOM\r\n\r\n:ok\r\nretry: 2500\r\n\r\n"
    "id: E-1\ndata: plain ascii\n\n"
    'id: E-2\revent: update\rdata: {"t":"é"}\r\r'
    "id: E-3\r\ndata: line one\r\ndata: \r\ndata:  two spaces keep one\r\ndata:no-space\r\n\r\n"
    ": a comment with ü\n"
    'id: E-4\nevent: gap\ndata: {"reason":"trimmed"}\n\n'
    "id: E-5\r\ndata: 日本語 ✓ 🎉🎉\r\ndata\r\n\r\n"
    "id: E-6\nretry: 1500\ndata:\n\n"
    "id: E-7\n\n"
    "event: no-data\n\n"
    "id: E-8\ndata: unfinished at the end"
)

EXPECTED = (
    [
        Event("message", "after the BOM", ""),
        Event("message", "plain ascii", "E-1"),
        Event("update", '{"t":"é"}', "E-2"),
        Event("message", "line one\n\n two spaces keep one\nno-space", "E-3"),
        Event("gap", '{"reason":"trimmed"}', "E-4"),
        Event("message", "日本語 ✓ 🎉🎉\n", "E-5"),
        Event("message", "", "E-6"),
    ],
    "E-7",
    1500,
)


def parse(chunks):
    parser = EventStreamParser()
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    return events, parser.last_event_id, parser.retry_ms


def cut(data, cuts):
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def main():
    data = TRICKY.encode("utf-8")
    assert parse([data]) == EXPECTED, f"whole stream: {parse([data])}"
    between_cr_lf = sum(1 for i in range(1, len(data)) if data[i - 1 : i + 1] == b"\r\n")
    inside_utf8 = sum(1 for byte in data if byte & 0xC0 == 0x80)
    assert between_cr_lf >= 4 and inside_utf8 >= 10, "the input has CRLFs and multi-byte characters"
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            got = parse(cut(data, [i, j]))
            assert got == EXPECTED, f"cut at {i} and {j}: {got}"
    one_byte_each = [data[i : i + 1] for i in range(len(data))]
    assert parse(one_byte_each) == EXPECTED, "one byte at a time"
    pairs = (len(data) + 1) * (len(data) + 2) // 2
    print(json.dumps({"bytes": len(data), "twoCutStreams": pairs, "betweenCrLf": between_cr_lf,
                      "insideUtf8": inside_utf8}))


if __name__ == "__main__":
    main()
