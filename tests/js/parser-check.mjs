// Checks examples/clients/sse-stream.mjs against streams cut at every possible place, and shows
// that the naive `chunk.split('\n')` way loses events on the same kind of input.
// Run by tests/clients.rs (`node tests/js/parser-check.mjs`); exits non-zero on any mismatch
// and prints one JSON summary line on success.

import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import { EventStreamParser, readEvents } from "../../examples/clients/sse-stream.mjs";

// Every line-end kind, a BOM, comments, `retry:`, multi-line and empty data, a field without a
// colon, 2-, 3- and 4-byte UTF-8, an id-only block, and an unfinished event at the end whose id
// must not count yet (a reconnect would skip it).
const TRICKY =
  "\uFEFFdata: after the BOM\r\n\r\n:ok\r\nretry: 2500\r\n\r\n" +
  "id: E-1\ndata: plain ascii\n\n" +
  'id: E-2\revent: update\rdata: {"t":"é"}\r\r' +
  "id: E-3\r\ndata: line one\r\ndata: \r\ndata:  two spaces keep one\r\ndata:no-space\r\n\r\n" +
  ": a comment with ü\n" +
  'id: E-4\nevent: gap\ndata: {"reason":"trimmed"}\n\n' +
  "id: E-5\r\ndata: 日本語 ✓ 🎉🎉\r\ndata\r\n\r\n" +
  "id: E-6\nretry: 1500\ndata:\n\n" +
  "id: E-7\n\n" +
  "event: no-data\n\n" +
  "id: E-8\ndata: unfinished at the end";

const TRICKY_EVENTS = [
  { type: "message", data: "after the BOM", lastEventId: "" },
  { type: "message", data: "plain ascii", lastEventId: "E-1" },
  { type: "update", data: '{"t":"é"}', lastEventId: "E-2" },
  { type: "message", data: "line one\n\n two spaces keep one\nno-space", lastEventId: "E-3" },
  { type: "gap", data: '{"reason":"trimmed"}', lastEventId: "E-4" },
  { type: "message", data: "日本語 ✓ 🎉🎉\n", lastEventId: "E-5" },
  { type: "message", data: "", lastEventId: "E-6" },
];
const TRICKY_END = { lastEventId: "E-7", retry: 1500 };

// What the hub sends: LF line ends only, so the naive way is right when nothing is split.
const HUB =
  ":ok\nretry: 3000\n\n" +
  "id: k3J9xQ-1\ndata: hello\n\n" +
  'id: k3J9xQ-2\nevent: progress\ndata: {"pct":50}\n\n' +
  "id: k3J9xQ-3\ndata: 日本語 🎉\ndata: second line\n\n" +
  "id: k3J9xQ-4\nevent: done\ndata: ok\n\n";

const encoder = new TextEncoder();

/** The parser fed `chunks` of bytes, decoded the way readEvents does (TextDecoder streaming). */
function parseBytes(chunks) {
  const decoder = new TextDecoder();
  const parser = new EventStreamParser();
  const events = [];
  for (const chunk of chunks) events.push(...parser.feed(decoder.decode(chunk, { stream: true })));
  events.push(...parser.feed(decoder.decode()));
  return { events, lastEventId: parser.lastEventId, retry: parser.retry };
}

/** The parser fed `pieces` of text as they are (the BOM reaches the parser this way). */
function parseText(pieces) {
  const parser = new EventStreamParser();
  const events = pieces.flatMap((piece) => parser.feed(piece));
  return { events, lastEventId: parser.lastEventId, retry: parser.retry };
}

/** The usual hand-rolled reader: decode each chunk on its own and split it at '\n'. */
function parseNaively(chunks) {
  const events = [];
  let type = "";
  let data = [];
  let id = "";
  for (const chunk of chunks) {
    for (const line of new TextDecoder().decode(chunk).split("\n")) {
      if (line === "") {
        if (data.length > 0) {
          events.push({ type: type || "message", data: data.join("\n"), lastEventId: id });
        }
        type = "";
        data = [];
      } else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      else if (line.startsWith("event:")) type = line.slice(6).replace(/^ /, "");
      else if (line.startsWith("id:")) id = line.slice(3).replace(/^ /, "");
    }
  }
  return events;
}

/** `bytes` cut at the sorted positions `cuts`. */
function cut(bytes, cuts) {
  const chunks = [];
  let start = 0;
  for (const at of [...cuts, bytes.length]) {
    chunks.push(bytes.subarray(start, at));
    start = at;
  }
  return chunks;
}

/** The events readEvents yields from a real fetch Response whose body arrives as `chunks`. */
async function readResponse(chunks) {
  const body = new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(chunk);
      controller.close();
    },
  });
  const parser = new EventStreamParser();
  const events = [];
  for await (const event of readEvents(new Response(body), parser)) events.push(event);
  return { events, lastEventId: parser.lastEventId, retry: parser.retry };
}

/** Whether byte `i` of `bytes` is inside a UTF-8 character (a continuation byte). */
const insideCharacter = (bytes, i) => i < bytes.length && (bytes[i] & 0xc0) === 0x80;

function checkTricky() {
  const expected = { events: TRICKY_EVENTS, ...TRICKY_END };
  const bytes = encoder.encode(TRICKY);
  assert.deepEqual(parseBytes([bytes]), expected, "whole stream at once");

  let betweenCrLf = 0;
  let insideUtf8 = 0;
  for (let i = 0; i <= bytes.length; i++) {
    if (bytes[i - 1] === 13 && bytes[i] === 10) betweenCrLf++;
    if (insideCharacter(bytes, i)) insideUtf8++;
    assert.deepEqual(parseBytes(cut(bytes, [i])), expected, `bytes cut at ${i}`);
    for (let j = i; j <= bytes.length; j++) {
      assert.deepEqual(parseBytes(cut(bytes, [i, j])), expected, `bytes cut at ${i} and ${j}`);
    }
  }
  assert.ok(betweenCrLf >= 4 && insideUtf8 >= 10, "the input has CRLFs and multi-byte characters");
  const oneByteEach = cut(bytes, Array.from(bytes.keys()).slice(1));
  assert.deepEqual(parseBytes(oneByteEach), expected, "one byte at a time");

  // Text pieces: the BOM is the parser's to drop, and cuts fall inside surrogate pairs.
  for (let i = 0; i <= TRICKY.length; i++) {
    const pieces = [TRICKY.slice(0, i), TRICKY.slice(i)];
    assert.deepEqual(parseText(pieces), expected, `text cut at ${i}`);
  }
  assert.deepEqual(parseText([...TRICKY]), expected, "one code point at a time");
  const twoCutStreams = ((bytes.length + 1) * (bytes.length + 2)) / 2;
  return { bytes: bytes.length, twoCutStreams, betweenCrLf, insideUtf8 };
}

async function checkResponses() {
  const expected = { events: TRICKY_EVENTS, ...TRICKY_END };
  const bytes = encoder.encode(TRICKY);
  for (let i = 0; i <= bytes.length; i++) {
    assert.deepEqual(await readResponse(cut(bytes, [i])), expected, `Response body cut at ${i}`);
  }
  const oneByteEach = cut(bytes, Array.from(bytes.keys()).slice(1));
  assert.deepEqual(await readResponse(oneByteEach), expected, "Response body one byte at a time");
  return bytes.length + 2;
}

/** Leaving readEvents' loop early closes the body (the connection), not just the loop. */
async function checkEarlyExitCancels() {
  let cancelled = false;
  const endless = new ReadableStream({
    start(controller) {
      controller.enqueue(encoder.encode("data: one\n\ndata: two\n\n"));
    },
    cancel() {
      cancelled = true;
    },
  });
  for await (const event of readEvents(new Response(endless))) {
    assert.equal(event.data, "one");
    break;
  }
  // The cancel travels through the decoder's pipe asynchronously.
  for (let i = 0; i < 100 && !cancelled; i++) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.ok(cancelled, "breaking out of readEvents should cancel the response body");
}

function checkNaive() {
  const bytes = encoder.encode(HUB);
  const expected = parseBytes([bytes]).events;
  assert.equal(expected.length, 4);
  assert.deepEqual(parseNaively([bytes]), expected, "the naive way is right on an unsplit stream");
  let wrong = 0;
  let lost = 0;
  for (let i = 1; i < bytes.length; i++) {
    assert.deepEqual(parseBytes(cut(bytes, [i])).events, expected, `hub stream cut at ${i}`);
    const naive = parseNaively(cut(bytes, [i]));
    if (!isDeepStrictEqual(naive, expected)) wrong++;
    if (naive.length < expected.length) lost++;
  }
  assert.ok(lost > 0, "the naive way should lose events when a chunk ends inside an event");
  return { cuts: bytes.length - 1, naiveWrong: wrong, naiveLostEvents: lost };
}

const tricky = checkTricky();
const responses = await checkResponses();
await checkEarlyExitCancels();
const naive = checkNaive();
console.log(JSON.stringify({ tricky, responses, naive }));
