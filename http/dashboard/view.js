// Rendering of the dashboard's sections from plain data: DOM built with h() (text is
// always text, never HTML), and small formatting helpers.

/** h("tag.class", { attr }, ...children): an element; null/false children are skipped. */
export function h(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag);
  if (classes.length) el.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
export function bytes(n) {
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

export function rate(n) {
  return n < 1 ? "0" : n < 10 ? n.toFixed(1) : Math.round(n).toLocaleString("en");
}

export function age(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 60_000) return `${Math.round(ms / 1000)} s`;
  if (ms < 3_600_000) return `${Math.round(ms / 60_000)} min`;
  return `${(ms / 3_600_000).toFixed(1)} h`;
}

export function clock(iso) {
  const d = new Date(iso);
  return d.toLocaleTimeString("en-GB", { hour12: false });
}

/** A node's state as an operator reads it: text and a shape, not colour alone. */
export function nodeState(n) {
  if (!n.live || n.state === "down") return { key: "down", icon: "✕", text: "Down" };
  if (n.drained) return { key: "draining", icon: "⇣", text: "Drained" };
  if (n.state === "suspect") return { key: "suspect", icon: "◌", text: "Suspect" };
  return { key: "up", icon: "●", text: "Up" };
}

const replicaIcons = { "in-sync": "✓", rebuilding: "↻", stale: "!" };
const replicaWords = { "in-sync": "in sync", rebuilding: "rebuilding", stale: "stale" };

/** Segments short of in-sync replicas on live nodes (as the API's degradedSegmentCount). */
export function degraded(v) {
  return v.segments.filter((s) =>
    s.replicas.filter((r) => r.state === "in-sync" && !v.downNodes.includes(r.node)).length <
      v.replicas
  ).length;
}

export function volumeHealth(v) {
  if (v.term === 0) return { key: "pending", icon: "◌", text: "Starting" };
  const d = degraded(v);
  if (v.downNodes.includes(v.owner)) return { key: "bad", icon: "✕", text: "Owner down" };
  if (d > 0) return { key: "warn", icon: "▲", text: `Degraded (${d})` };
  return { key: "ok", icon: "●", text: "Healthy" };
}

function badge(state, extraClass = "") {
  return h(
    `span.badge.${state.key}${extraClass}`,
    {},
    h("span", { "aria-hidden": "true" }, state.icon),
    " ",
    state.text,
  );
}

/** Bytes of segment files each node holds (its replicas × segment size). */
export function usedBytesByNode(volumes) {
  const used = new Map();
  for (const v of volumes) {
    for (const s of v.segments) {
      for (const r of s.replicas) used.set(r.node, (used.get(r.node) ?? 0) + v.segmentBytes);
    }
  }
  return used;
}

export function renderNodes(container, snapshot, io, actions) {
  const zones = new Map();
  for (const n of snapshot.nodes) {
    if (!zones.has(n.zone)) zones.set(n.zone, []);
    zones.get(n.zone).push(n);
  }
  const used = usedBytesByNode(snapshot.volumes);
  const owned = new Map();
  for (const v of snapshot.volumes) owned.set(v.owner, (owned.get(v.owner) ?? 0) + 1);
  const children = [...zones].sort(([a], [b]) => a.localeCompare(b)).map(([zone, nodes]) =>
    h(
      "section.zone",
      { "aria-label": `zone ${zone}` },
      h("h3", {}, h("span.visually-hidden", {}, "zone "), zone),
      h(
        "ul.node-cards",
        {},
        nodes.map((n) => {
          const state = nodeState(n);
          const u = used.get(n.id) ?? 0;
          const pct = Math.min(100, (u / n.capacityBytes) * 100);
          const nio = n.live ? io.node(n.id) : null;
          const isDrained = n.drained;
          return h(
            `li.node-card.${state.key}`,
            { dataset: { node: n.id } },
            h("div.node-head", {}, h("strong.node-id", {}, n.id), badge(state)),
            h(
              "dl.facts",
              {},
              h("dt", {}, "Heartbeat"),
              h(
                "dd",
                {},
                n.id === snapshot.answeredBy ? "this node" : `${age(n.lastHeartbeatAgoMs)} ago`,
              ),
              h("dt", {}, "Owns"),
              h("dd", {}, `${owned.get(n.id) ?? 0} vol`),
              h("dt", {}, "IO"),
              h(
                "dd",
                {},
                !n.live
                  ? "—"
                  : nio
                  ? `${rate(nio.iops)} IOPS · ${bytes(nio.bytesPerSec)}/s`
                  : "idle",
              ),
            ),
            h(
              "div.capacity",
              {},
              h("span.capacity-text", {}, `${bytes(u)} of ${bytes(n.capacityBytes)} allocated`),
              h("meter", {
                min: 0,
                max: 100,
                value: pct.toFixed(2),
                "aria-label": `capacity used on ${n.id}: ${pct.toFixed(1)}%`,
              }),
            ),
            h(
              "div.node-actions",
              {},
              isDrained
                ? h("button.ghost.small", {
                  type: "button",
                  dataset: { focusKey: `undrain:${n.id}` },
                  onclick: () => actions.undrain(n.id),
                }, "Undrain")
                : h("button.ghost.small", {
                  type: "button",
                  dataset: { focusKey: `drain:${n.id}` },
                  disabled: !n.live,
                  onclick: () => actions.drain(n.id),
                }, "Drain"),
            ),
          );
        }),
      ),
    )
  );
  if (children.length === 0) children.push(h("p.empty", {}, "No nodes registered yet."));
  container.replaceChildren(...children);
}

function segmentGrid(v) {
  const nodes = [...new Set(v.segments.flatMap((s) => s.replicas.map((r) => r.node)))].sort();
  const shown = v.segments.slice(0, 256);
  const table = h(
    "table.grid",
    {},
    h("caption.visually-hidden", {}, `Replicas of ${v.name}: nodes by segment`),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col" }, h("span.visually-hidden", {}, "node")),
        shown.map((s) => h("th.seg", { scope: "col", title: `segment ${s.index}` }, s.index)),
      ),
    ),
    h(
      "tbody",
      {},
      nodes.map((node) => {
        const down = v.downNodes.includes(node);
        return h(
          "tr",
          {},
          h(
            "th",
            { scope: "row" },
            node,
            node === v.owner ? h("span.owner-mark", { title: "owner" }, " ★") : null,
          ),
          shown.map((s) => {
            const r = s.replicas.find((x) => x.node === node);
            if (!r) {
              return h("td.cell.none", {
                "aria-label": `segment ${s.index}: no replica on ${node}`,
              }, "");
            }
            const label = `segment ${s.index} on ${node}: ${replicaWords[r.state]}${
              down ? ", node down" : ""
            }`;
            return h(`td.cell.${r.state}${down ? ".down" : ""}`, {
              title: label,
              "aria-label": label,
            }, replicaIcons[r.state]);
          }),
        );
      }),
    ),
  );
  const more = v.segments.length > shown.length
    ? h("p.hint", {}, `first ${shown.length} of ${v.segments.length} segments shown`)
    : null;
  return h("div.grid-wrap", {}, table, more);
}

function copies(v) {
  if (!v.copies.length) return null;
  return h(
    "ul.copies",
    {},
    v.copies.map((c) => {
      const total = c.bytesDone + c.bytesLeft;
      return h(
        "li",
        {},
        h(
          "span",
          {},
          `${c.kind} of ${c.node}: ${bytes(c.bytesDone)} of ${bytes(total)} · ${
            bytes(c.bytesPerSec)
          }/s`,
        ),
        h("progress", {
          max: Math.max(total, 1),
          value: c.bytesDone,
          "aria-label": `${c.kind} of ${c.node} on ${v.name}`,
        }),
      );
    }),
  );
}

export function renderVolumes(container, snapshot, io, expanded, actions) {
  if (snapshot.volumes.length === 0) {
    container.replaceChildren(
      h(
        "p.empty",
        {},
        "No volumes yet. ",
        h("span.hint", {}, "Create one with the button above or `cairn volume create`."),
      ),
    );
    return;
  }
  const rows = snapshot.volumes.flatMap((v) => {
    const health = volumeHealth(v);
    const vio = io.volume(v.name);
    const open = expanded.has(v.name);
    const inSync = v.segments.reduce(
      (a, s) =>
        a + s.replicas.filter((r) => r.state === "in-sync" && !v.downNodes.includes(r.node)).length,
      0,
    );
    const total = v.segments.length * v.replicas;
    const main = h(
      `tr.volume-row.${health.key}`,
      { dataset: { volume: v.name } },
      h(
        "th",
        { scope: "row", "data-label": "Volume" },
        h(
          "button.disclosure",
          {
            type: "button",
            "aria-expanded": open ? "true" : "false",
            "aria-controls": `detail-${v.name}`,
            dataset: { focusKey: `expand:${v.name}` },
            onclick: () => actions.toggle(v.name),
          },
          h("span.chev", { "aria-hidden": "true" }, open ? "▾" : "▸"),
          " ",
          v.name,
        ),
      ),
      h("td", { "data-label": "Size" }, bytes(v.sizeBytes)),
      h(
        "td",
        { "data-label": "Owner" },
        h("span", {}, v.owner || "—", h("span.term", {}, ` · term ${v.term}`)),
      ),
      h(
        "td",
        { "data-label": "Replicas" },
        h("span", {}, `${inSync}/${total}`, h("span.hint", {}, " in sync")),
      ),
      h("td", { "data-label": "Health" }, badge(health)),
      h("td.num", { "data-label": "IOPS" }, vio ? rate(vio.iops) : "0"),
      h("td.num", { "data-label": "Throughput" }, vio ? `${bytes(vio.bytesPerSec)}/s` : "0 B/s"),
      h(
        "td.num",
        { "data-label": "Latency" },
        vio && vio.latencyMs !== null ? `${vio.latencyMs.toFixed(2)} ms` : "—",
      ),
      h(
        "td.row-actions",
        { "data-label": "Actions" },
        h("button.ghost.small", {
          type: "button",
          dataset: { focusKey: `move:${v.name}` },
          onclick: () => actions.move(v.name),
        }, "Move"),
        h("button.ghost.small", {
          type: "button",
          dataset: { focusKey: `verify:${v.name}` },
          onclick: () => actions.verify(v.name),
        }, "Verify"),
        h("button.danger-ghost.small", {
          type: "button",
          dataset: { focusKey: `delete:${v.name}` },
          onclick: () => actions.remove(v.name),
        }, "Delete"),
      ),
    );
    if (!open) return [main];
    const detail = h(
      "tr.detail",
      { id: `detail-${v.name}` },
      h(
        "td",
        { colspan: 9 },
        h(
          "p.meta",
          {},
          `${v.segments.length} segment${v.segments.length === 1 ? "" : "s"} of ${
            bytes(v.segmentBytes)
          } · ${v.replicas} replicas, min ${v.minInSync} in sync · read policy ${v.readPolicy} · home ${
            v.home || "—"
          } · id ${v.id}`,
        ),
        copies(v),
        segmentGrid(v),
      ),
    );
    return [main, detail];
  });
  container.replaceChildren(
    h(
      "table.volumes",
      {},
      h("caption.visually-hidden", {}, "Volumes"),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          [
            "Volume",
            "Size",
            "Owner",
            "Replicas",
            "Health",
            "IOPS",
            "Throughput",
            "Latency",
            "Actions",
          ]
            .map((t, i) => h(i >= 5 && i <= 7 ? "th.num" : "th", { scope: "col" }, t)),
        ),
      ),
      h("tbody", {}, rows),
    ),
  );
}

const kindLabels = {
  "node-joined": "joined",
  "node-up": "up",
  "node-suspect": "suspect",
  "node-down": "down",
  "node-draining": "drain",
  "node-removed": "left",
  "volume-created": "created",
  "volume-deleted": "deleted",
  takeover: "takeover",
  handoff: "handoff",
  "replica-stale": "stale",
  "replica-rebuilding": "rebuild",
  "replica-in-sync": "in sync",
  "replica-replaced": "replaced",
  "copy-started": "copy",
  "copy-finished": "copied",
  "operation-started": "started",
  "operation-finished": "finished",
};

/** A long operation of the answering node (a verify): its progress, or how it ended. */
export function operationItem(op) {
  const { done, total, unit } = op.progress;
  const ended = op.state === "succeeded"
    ? op.result && op.result.mismatches.length > 0
      ? `${op.result.mismatches.length} problems found`
      : "every replica agrees"
    : op.state === "failed"
    ? `failed: ${op.error?.message ?? "unknown error"}`
    : `${done} of ${total} ${unit}`;
  return h(
    `li.operation.${op.state}`,
    { dataset: { operation: op.id } },
    h("span.operation-title", {}, `${op.kind.replace("volume.", "")} ${op.volume}`),
    h("span.operation-state", {}, ended),
    h("progress", {
      max: Math.max(total, 1),
      value: done,
      "aria-label": `${op.kind} of ${op.volume}: ${done} of ${total} ${unit}`,
    }),
  );
}
const severityIcons = { info: "i", warning: "▲", critical: "✕" };

export function eventItem(e) {
  return h(
    `li.event.${e.severity}`,
    {},
    h("time", { datetime: e.at }, clock(e.at)),
    h(
      "span.kind",
      {},
      h("span.sev", { "aria-label": e.severity }, severityIcons[e.severity]),
      " ",
      kindLabels[e.kind] ?? e.kind,
    ),
    h("span.message", {}, e.message),
  );
}
