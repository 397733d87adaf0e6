#!/usr/bin/env node
// Follows an ssehub event stream from Node (18 or later, no packages) and prints each event as
// one JSON line {"id", "event", "data"} on stdout. Reconnects like EventSource, resuming with
// Last-Event-ID, and exits 0 when the channel is closed (the hub answers 204) or after
// --max-events events. Connection problems are reported on stderr.
//
//   node examples/clients/node-client.mjs http://localhost:8080/events/news \
//     [--last-event-id ID] [--token JWT] [--max-events N]

import { parseArgs } from "node:util";
import { follow } from "./sse-stream.mjs";

const USAGE =
  "usage: node-client.mjs <events-url> [--last-event-id ID] [--token T] [--max-events N]";

function usage(message) {
  process.stderr.write(`${message}\n${USAGE}\n`);
  process.exit(2);
}

function parseCommandLine() {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        "last-event-id": { type: "string", default: "" },
        token: { type: "string" },
        "max-events": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (err) {
    usage(err.message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  if (positionals.length !== 1) usage("exactly one events URL is needed");
  let maxEvents = Infinity;
  if (values["max-events"] !== undefined) {
    if (!/^[1-9][0-9]*$/.test(values["max-events"])) usage("--max-events wants a positive integer");
    maxEvents = Number(values["max-events"]);
  }
  return {
    url: positionals[0],
    lastEventId: values["last-event-id"],
    token: values.token,
    maxEvents,
  };
}

async function main() {
  const { url, lastEventId, token, maxEvents } = parseCommandLine();
  const headers = token ? { authorization: `Bearer ${token}` } : {};
  const stop = new AbortController();
  let printed = 0;
  const outcome = await follow(url, {
    headers,
    lastEventId,
    signal: stop.signal,
    onEvent(event) {
      const line = { id: event.lastEventId, event: event.type, data: event.data };
      process.stdout.write(`${JSON.stringify(line)}\n`);
      if (++printed >= maxEvents) stop.abort();
    },
    onError(err) {
      const reason = err.cause ? `${err.message}: ${err.cause.message ?? err.cause}` : err.message;
      process.stderr.write(`node-client: ${reason}; reconnecting\n`);
    },
  });
  const why = outcome === "closed" ? "channel closed" : `stopped after ${printed} events`;
  process.stderr.write(`node-client: ${why}\n`);
}

// A reader that goes away (`| head`) is not an error.
process.stdout.on("error", (err) => process.exit(err.code === "EPIPE" ? 0 : 1));

// Exit by running out of work rather than process.exit(), which can cut stdout short where
// pipes are asynchronous (macOS).
main().catch((err) => {
  process.stderr.write(`node-client: ${err.message}\n`);
  process.exitCode = 1;
});
