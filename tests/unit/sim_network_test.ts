import assert from "node:assert/strict";
import { TransportError } from "../../actors/ports.ts";
import { SimNetwork, subjectMatches } from "../../sim/network.ts";
import { SimScheduler } from "../../sim/scheduler.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const bytes = (s: string) => enc.encode(s);
const text = (b: Uint8Array) => dec.decode(b);

function setup(seed = 1, options = {}) {
  const sim = new SimScheduler({ seed });
  const net = new SimNetwork(sim, options);
  return { sim, net };
}

/** Settles into a record so the test can look after running the scheduler. */
function track<T>(p: Promise<T>) {
  const r: { value?: T; error?: unknown; done: boolean } = { done: false };
  p.then(
    (v) => Object.assign(r, { value: v, done: true }),
    (e) => Object.assign(r, { error: e, done: true }),
  );
  return r;
}

function failureKind(r: { error?: unknown }): string | undefined {
  return r.error instanceof TransportError ? r.error.kind : undefined;
}

/**
 * Three servers and two clients: each client runs a loop of requests; a
 * server handles one by waiting a random time, asking another server
 * (a chain), and answering. Returns what happened, in order.
 */
async function scenario(seed: number) {
  const sim = new SimScheduler({ seed });
  const net = new SimNetwork(sim, { minDelayMs: 0.1, maxDelayMs: 3, verbose: true });
  const servers = ["s1", "s2", "s3"];
  const log: string[] = [];
  for (const name of servers) {
    const t = net.endpoint(name);
    const clock = sim.clockFor(name);
    const random = sim.randomFor(name);
    const sleep = (ms: number) => new Promise<void>((r) => clock.setTimer(ms, r));
    t.subscribe("work.*", (msg) => {
      (async () => {
        await sleep(random.next() * 5);
        const depth = Number(text(msg.data));
        let answer = `${name}`;
        if (depth > 0) {
          const next = servers[Math.floor(random.next() * servers.length)];
          try {
            const sub = await t.request(`work.${next}`, bytes(String(depth - 1)), 50);
            answer += `>${text(sub)}`;
          } catch (e) {
            answer += `>${(e as TransportError).kind}`;
          }
        }
        msg.respond(bytes(answer));
      })();
    });
    t.subscribe("pool", (msg) => msg.respond(bytes(name)), { queue: "q" });
  }
  const results: string[] = [];
  for (const client of ["c1", "c2"]) {
    const t = net.endpoint(client);
    const random = sim.randomFor(client);
    sim.spawn(async () => {
      for (let i = 0; i < 20; i++) {
        const target = servers[Math.floor(random.next() * servers.length)];
        const depth = Math.floor(random.next() * 3);
        const reply = await t.request(`work.${target}`, bytes(String(depth)), 100);
        const pooled = await t.request("pool", bytes(""), 100);
        const line = `${client}#${i} ${text(reply)} pool=${text(pooled)} at ${
          sim.nowMs.toFixed(3)
        }`;
        results.push(line);
        log.push(line);
      }
    }, client);
  }
  await sim.runFor(10_000);
  return {
    results,
    trace: sim.formatTrace(),
    eventsRun: sim.eventsRun,
    delivered: net.messagesDelivered,
    errors: sim.errors.length,
  };
}

Deno.test("network: the same seed replays exactly; another seed runs differently", async () => {
  const a = await scenario(11);
  const b = await scenario(11);
  const c = await scenario(12);
  assert.equal(a.errors, 0);
  assert.equal(a.results.length, 40);
  assert.ok(a.trace.split("\n").length > 500, "verbose trace records messages");
  assert.deepEqual(b.results, a.results);
  assert.equal(b.trace, a.trace);
  assert.equal(b.eventsRun, a.eventsRun);
  assert.equal(b.delivered, a.delivered);
  assert.notDeepEqual(c.results, a.results);
  assert.notEqual(c.trace, a.trace);
});

Deno.test("network: subject matching with * and >", () => {
  const m = (p: string, s: string) => subjectMatches(p.split("."), s.split("."));
  assert.equal(m("a.*.c", "a.b.c"), true);
  assert.equal(m("a.*.c", "a.b.d"), false);
  assert.equal(m("a.*.c", "a.b.c.d"), false);
  assert.equal(m("a.*.c", "a.c"), false);
  assert.equal(m("a.>", "a.b"), true);
  assert.equal(m("a.>", "a.b.c.d"), true);
  assert.equal(m("a.>", "a"), false);
  assert.equal(m("*.>", "x.y"), true);
  assert.equal(m("a.b", "a.b"), true);
  assert.equal(m("a.b", "a.b.c"), false);
  assert.equal(m(">", "anything.at.all"), true);
});

Deno.test("network: publish delivers to every wildcard match after a delay", async () => {
  const { sim, net } = setup(1, { minDelayMs: 1, maxDelayMs: 2 });
  const got: string[] = [];
  const a = net.endpoint("a");
  const b = net.endpoint("b");
  a.subscribe("a.*.c", (m) => got.push(`star:${m.subject}`));
  b.subscribe("a.>", (m) => got.push(`tail:${m.subject}:${text(m.data)}`));
  const exact = b.subscribe("a.b.c", (m) => got.push(`exact:${m.subject}`));
  const sent = bytes("hi");
  a.publish("a.b.c", sent);
  sent[0] = 0; // the sender's buffer is copied on send
  await sim.runFor(0.5);
  assert.deepEqual(got, []);
  await sim.runFor(2);
  assert.deepEqual(got.sort(), ["exact:a.b.c", "star:a.b.c", "tail:a.b.c:hi"]);
  got.length = 0;
  exact.unsubscribe();
  b.publish("a.x.y.z", bytes("deep"));
  b.publish("a.x.c", bytes("x"));
  b.publish("b.x.c", bytes("none"));
  await sim.runFor(5);
  assert.deepEqual(got.sort(), ["star:a.x.c", "tail:a.x.c:x", "tail:a.x.y.z:deep"]);
  assert.throws(() => a.publish("a.*", bytes("")), /invalid subject/);
  assert.throws(() => a.subscribe("a.>.b", () => {}), /invalid subject/);
});

Deno.test("network: a queue group gets each message once, spread over members", async () => {
  const { sim, net } = setup(3);
  const counts = new Map<string, number>();
  const seen = new Set<string>();
  let plain = 0;
  for (const node of ["n1", "n2", "n3"]) {
    net.endpoint(node).subscribe("jobs.>", (m) => {
      const id = text(m.data);
      assert.ok(!seen.has(id), `message ${id} delivered twice in the group`);
      seen.add(id);
      counts.set(node, (counts.get(node) ?? 0) + 1);
    }, { queue: "workers" });
  }
  net.endpoint("n4").subscribe("jobs.>", () => plain++);
  const producer = net.endpoint("p");
  for (let i = 0; i < 300; i++) producer.publish("jobs.x", bytes(String(i)));
  await sim.runFor(10);
  assert.equal(seen.size, 300);
  assert.equal(plain, 300);
  for (const node of ["n1", "n2", "n3"]) assert.ok(counts.get(node)! > 60, `${node} got its share`);
  assert.equal(net.messagesSent, 600);
  assert.equal(net.messagesDelivered, 600);
});

Deno.test("network: request to a queue group gets one answer; plain subscribers all get it, first reply wins", async () => {
  const { sim, net } = setup(4);
  let served = 0;
  for (const node of ["n1", "n2"]) {
    net.endpoint(node).subscribe("svc", (m) => {
      served++;
      m.respond(bytes(node));
    }, { queue: "q" });
  }
  let plainSeen = 0;
  for (const node of ["m1", "m2"]) {
    net.endpoint(node).subscribe("multi", (m) => {
      plainSeen++;
      m.respond(bytes(node));
    });
  }
  const c = net.endpoint("c");
  const r1 = track(c.request("svc", bytes("?"), 100));
  const r2 = track(c.request("multi", bytes("?"), 100));
  await sim.runFor(10);
  assert.equal(served, 1);
  assert.ok(["n1", "n2"].includes(text(r1.value!)));
  assert.equal(plainSeen, 2);
  assert.ok(["m1", "m2"].includes(text(r2.value!)));
  assert.equal(net.lateReplies, 1, "the second plain subscriber's reply came too late");
});

Deno.test("network: no-responders after one delay; timeout when nobody answers", async () => {
  const { sim, net } = setup(5, { minDelayMs: 2, maxDelayMs: 2 });
  const c = net.endpoint("c");
  const none = track(c.request("nobody.home", bytes(""), 1000));
  await sim.runFor(1.9);
  assert.equal(none.done, false);
  await sim.runFor(0.2);
  assert.equal(failureKind(none), "no-responders");

  net.endpoint("s").subscribe("silent", () => {});
  const start = sim.nowMs;
  const silent = track(c.request("silent", bytes(""), 50));
  assert.equal(await sim.runUntil(() => silent.done, 1000), true);
  assert.equal(failureKind(silent), "timeout");
  assert.equal(sim.nowMs - start, 50);
  assert.equal(net.noResponders, 1);
  assert.equal(net.timeouts, 1);
});

Deno.test("network: a partition makes requests time out; heal restores them", async () => {
  const { sim, net } = setup(6);
  for (const node of ["n1", "n2", "n3"]) {
    net.endpoint(node).subscribe(`ping.${node}`, (m) => m.respond(bytes(`pong from ${node}`)));
  }
  const n1 = net.endpoint("n1");
  net.partition([["n1", "n2"], ["n3"]]);
  const cut = track(n1.request("ping.n3", bytes(""), 20));
  const same = track(n1.request("ping.n2", bytes(""), 20));
  await sim.runFor(30);
  assert.equal(failureKind(cut), "timeout");
  assert.equal(text(same.value!), "pong from n2");
  assert.equal(net.messagesDropped.partition, 1);

  net.heal();
  const healed = track(n1.request("ping.n3", bytes(""), 20));
  await sim.runFor(30);
  assert.equal(text(healed.value!), "pong from n3");

  net.isolate("n2");
  const isolated = track(n1.request("ping.n2", bytes(""), 20));
  await sim.runFor(30);
  assert.equal(failureKind(isolated), "timeout");

  // One-way: the request gets to n3 but its reply is lost.
  net.heal();
  let n3Saw = 0;
  net.endpoint("n3").subscribe("oneway", (m) => {
    n3Saw++;
    m.respond(bytes("lost"));
  });
  net.blockLink("n3", "n1");
  const oneway = track(n1.request("oneway", bytes(""), 20));
  await sim.runFor(30);
  assert.equal(n3Saw, 1);
  assert.equal(failureKind(oneway), "timeout");
});

Deno.test("network: a partition made while a message is in flight drops it", async () => {
  const { sim, net } = setup(7, { minDelayMs: 5, maxDelayMs: 5 });
  let got = 0;
  net.endpoint("b").subscribe("x", () => got++);
  net.endpoint("a").publish("x", bytes(""));
  await sim.runFor(1);
  net.partition([["a"], ["b"]]);
  await sim.runFor(10);
  assert.equal(got, 0);
  assert.equal(net.messagesDropped.partition, 1);
});

Deno.test("network: a paused receiver holds messages until it resumes", async () => {
  const { sim, net } = setup(8);
  const got: string[] = [];
  net.endpoint("b").subscribe("x", (m) => got.push(`${text(m.data)}@${sim.nowMs}`));
  sim.pause("b");
  const a = net.endpoint("a");
  for (const m of ["1", "2", "3"]) a.publish("x", bytes(m));
  await sim.runFor(100);
  assert.equal(got.length, 0);
  sim.resume("b");
  await sim.runFor(1);
  assert.equal(got.length, 3);
  assert.ok(got.every((g) => g.endsWith("@100")));
});

Deno.test("network: messages in flight from a killed node still arrive; to it they are dropped", async () => {
  const { sim, net } = setup(9, { minDelayMs: 5, maxDelayMs: 5 });
  const got: string[] = [];
  net.endpoint("b").subscribe("to.b", (m) => got.push(text(m.data)));
  const a = net.endpoint("a");
  let aGot = 0;
  a.subscribe("to.a", () => aGot++);
  a.publish("to.b", bytes("last words"));
  net.endpoint("b").publish("to.a", bytes("too late"));
  let continued = false;
  net.endpoint("b").subscribe("slow", () => {}); // never answers
  const pending = a.request("slow", bytes(""), 1000).finally(() => continued = true);
  await sim.runFor(1);
  net.kill("a");
  a.publish("to.b", bytes("from the grave")); // stale endpoint: ignored
  await sim.runFor(2000);
  assert.deepEqual(got, ["last words"]);
  assert.equal(aGot, 0);
  assert.equal(continued, false, "a dead node's pending request never settles");
  assert.equal(net.messagesDropped.dead, 1);
  void pending;

  assert.throws(() => net.endpoint("a"), /dead/);
  net.revive("a");
  const a2 = net.endpoint("a");
  assert.notEqual(a2, a);
  a2.subscribe("to.a", () => aGot++);
  net.endpoint("b").publish("to.a", bytes("hello again"));
  await sim.runFor(10);
  assert.equal(aGot, 1);
});

Deno.test("network: a reply from a dead responder's stale code is not sent", async () => {
  const { sim, net } = setup(10, { minDelayMs: 1, maxDelayMs: 1 });
  let held: ((d: Uint8Array) => void) | undefined;
  net.endpoint("s").subscribe("q", (m) => held = (d) => m.respond(d));
  const r = track(net.endpoint("c").request("q", bytes(""), 50));
  await sim.runFor(5);
  net.kill("s");
  held!(bytes("zombie"));
  await sim.runFor(100);
  assert.equal(failureKind(r), "timeout");
});

Deno.test("network: random drops are counted; flush takes a round trip", async () => {
  const { sim, net } = setup(11, { minDelayMs: 1, maxDelayMs: 1, dropProbability: 0.5 });
  let got = 0;
  net.endpoint("b").subscribe("x", () => got++);
  const a = net.endpoint("a");
  for (let i = 0; i < 1000; i++) a.publish("x", bytes(""));
  await sim.runFor(5);
  assert.equal(got + net.messagesDropped.random, 1000);
  assert.ok(got > 400 && got < 600);
  assert.equal(net.messagesSent, net.messagesDelivered + net.totalDropped);
  net.setDropProbability(0);
  const f = track(a.flush());
  await sim.runFor(1.9);
  assert.equal(f.done, false);
  await sim.runFor(0.2);
  assert.equal(f.done, true);
});

Deno.test("network: reorder false keeps FIFO per sender-receiver pair", async () => {
  for (const reorder of [true, false]) {
    const { sim, net } = setup(12, { minDelayMs: 0, maxDelayMs: 10, reorder });
    const got: number[] = [];
    net.endpoint("b").subscribe("x", (m) => got.push(Number(text(m.data))));
    const a = net.endpoint("a");
    for (let i = 0; i < 50; i++) a.publish("x", bytes(String(i)));
    await sim.runFor(20);
    const inOrder = got.every((v, i) => v === i);
    assert.equal(got.length, 50);
    assert.equal(inOrder, !reorder);
  }
});
