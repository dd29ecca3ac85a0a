/**
 * The NATS echo ceiling's responder, run as its own process so it does not
 * share an event loop (or a core) with the requester:
 *
 *   deno run -A bench/echo_responder.ts nats://127.0.0.1:4222 [subject]
 *
 * Answers every request on the subject with its own payload, prints "ready"
 * once subscribed, and exits when stdin closes (so it never outlives the
 * bench that started it) or on SIGTERM.
 */
import { connect } from "@nats-io/transport-node";
import { presizeReceiveBuffers } from "../protocol/nats_internals.ts";
import { serveUntilStdinCloses } from "./child.ts";

export const defaultEchoSubject = "bench.echo";

async function main(): Promise<void> {
  const [url, subject = defaultEchoSubject] = Deno.args;
  if (!url) {
    console.error("usage: deno run -A bench/echo_responder.ts <natsUrl> [subject]");
    Deno.exit(2);
  }
  presizeReceiveBuffers(); // as Cairn's own connections do
  const nc = await connect({ servers: url, name: "bench-echo", noAsyncTraces: true });
  nc.subscribe(subject, {
    callback: (_err, msg) => {
      msg.respond(msg.data);
    },
  });
  await serveUntilStdinCloses(nc);
}

if (import.meta.main) await main();
