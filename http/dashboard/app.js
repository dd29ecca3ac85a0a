// The Cairn dashboard: reads GET /api/v1/events (server-sent events, read with fetch so the
// bearer token goes in a header), renders nodes, volumes, IO charts and the event feed,
// and calls the same HTTP API for every action.
import { bytes, eventItem, h, operationItem, renderNodes, renderVolumes } from "./view.js";
import { Charts, IoHistory } from "./charts.js";

const api = "/api/v1";
const tokenKey = "cairn.token";
const $ = (id) => document.getElementById(id);

const state = {
  snapshot: null,
  events: [],
  /** Volumes whose details the operator opened (true) or closed (false). */
  toggled: new Map(),
  scope: "volume",
  history: new IoHistory(),
  /** This node's long operations (verify), by id, newest last. */
  operations: new Map(),
};
let charts = null;

// ---- token and API calls ----

const token = () => sessionStorage.getItem(tokenKey) ?? "";
function headers(json = false) {
  const h = {};
  if (token()) h.authorization = `Bearer ${token()}`;
  if (json) h["content-type"] = "application/json";
  return h;
}

/** Calls the API; resolves with the JSON body, or throws an Error carrying the problem detail. */
async function call(method, path, body) {
  const res = await fetch(`${api}${path}`, {
    method,
    headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch { /* not JSON */ }
  if (!res.ok) {
    const err = new Error(
      json?.detail ? `${json.title ?? res.status}: ${json.detail}` : `HTTP ${res.status}`,
    );
    err.status = res.status;
    throw err;
  }
  return json;
}

function toast(message, kind = "ok") {
  const el = h(`div.toast.${kind}`, {}, message);
  $("toasts").append(el);
  setTimeout(() => el.remove(), kind === "error" ? 9000 : 4000);
}

// ---- the event stream ----

let streamAbort = null;
let retryTimer = null;

function setConnection(stateName, text) {
  $("connection").dataset.state = stateName;
  $("connection-text").textContent = text;
}

async function connect() {
  clearTimeout(retryTimer);
  streamAbort?.abort();
  const abort = new AbortController();
  streamAbort = abort;
  setConnection("connecting", "Connecting");
  try {
    const res = await fetch(`${api}/events`, { headers: headers(), signal: abort.signal });
    if (res.status === 401 || res.status === 403) {
      setConnection("auth", "Token needed");
      openToken("This cluster needs a token of role read or admin to show its state.");
      return;
    }
    if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
    setConnection("live", "Live");
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        handleBlock(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
    throw new Error("stream ended");
  } catch (err) {
    if (abort.signal.aborted) return;
    setConnection("down", "Reconnecting");
    console.info(`event stream: ${err.message}; reconnecting`);
    retryTimer = setTimeout(connect, 2000);
  }
}

function handleBlock(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length) return;
  const payload = JSON.parse(data.join("\n"));
  if (event === "snapshot") onSnapshot(payload);
  else if (event === "stats") state.history.add(payload);
  else if (event === "event") onEvent(payload);
  else if (event === "operation") onOperation(payload);
}

// ---- rendering ----

const io = {
  now: () => Math.round(Date.now() / 1000),
  volume: (name) => state.history.current(`volume:${name}`, io.now()),
  node: (id) => state.history.current(`node:${id}`, io.now()),
};

/** Re-renders a section, keeping keyboard focus on the same control. */
function keepFocus(render) {
  const key = document.activeElement?.dataset?.focusKey;
  render();
  if (key) document.querySelector(`[data-focus-key="${CSS.escape(key)}"]`)?.focus();
}

const actions = {
  toggle(name) {
    state.toggled.set(name, !expandedNames().has(name));
    renderAll();
  },
  move: openMove,
  remove: openDelete,
  verify: async (name) => {
    try {
      await call("POST", `/volumes/${encodeURIComponent(name)}/verify`);
      toast(`verify of ${name} started`);
    } catch (err) {
      toast(`Verify ${name}: ${err.message}`, "error");
    }
  },
  drain: (id) =>
    confirmAction(
      `Drain ${id}?`,
      `Volumes owned by ${id} move to other nodes and no new replicas are placed on it.`,
      "Drain",
      () => call("POST", `/nodes/${encodeURIComponent(id)}/drain`),
      `${id} draining`,
    ),
  undrain: async (id) => {
    try {
      await call("POST", `/nodes/${encodeURIComponent(id)}/undrain`);
      toast(`${id} undrained`);
    } catch (err) {
      toast(`Undrain ${id}: ${err.message}`, "error");
    }
  },
};

function onSnapshot(snapshot) {
  state.snapshot = snapshot;
  renderAll();
}

/** Details open: as the operator chose, else open while there are few volumes. */
function expandedNames() {
  const few = (state.snapshot?.volumes.length ?? 0) <= 3;
  return new Set(
    (state.snapshot?.volumes ?? []).map((v) => v.name).filter((n) => state.toggled.get(n) ?? few),
  );
}

function renderAll() {
  const s = state.snapshot;
  if (!s) return;
  const live = s.nodes.filter((n) => n.live).length;
  const degraded =
    s.volumes.filter((v) =>
      v.segments.some((seg) =>
        seg.replicas.filter((r) => r.state === "in-sync" && !v.downNodes.includes(r.node)).length <
          v.replicas
      )
    ).length;
  const used = s.volumes.reduce((a, v) => a + v.sizeBytes, 0);
  $("summary").replaceChildren(
    h(
      "span",
      { class: live < s.nodes.length ? "warn-text" : "" },
      `${live}/${s.nodes.length} nodes live`,
    ),
    " · ",
    `${s.volumes.length} volumes (${bytes(used)})`,
    " · ",
    h("span", { class: degraded ? "warn-text" : "" }, `${degraded} degraded`),
  );
  $("answered-by").textContent = s.answeredBy;
  keepFocus(() => {
    renderNodes($("zones"), s, io, actions);
    renderVolumes($("volume-list"), s, io, expandedNames(), actions);
  });
  drawCharts();
}

function drawCharts() {
  const s = state.snapshot;
  if (!s) return;
  charts ??= new Charts({
    iops: $("chart-iops"),
    bytes: $("chart-bytes"),
    latency: $("chart-latency"),
  });
  const names = state.scope === "node" ? s.nodes.map((n) => n.id) : s.volumes.map((v) => v.name);
  charts.update(state.history, state.scope, names);
}

/** Operations shown: every running one, then the latest ended. */
const shownOperations = 5;

function onOperation(op) {
  state.operations.delete(op.id);
  state.operations.set(op.id, op);
  const ops = [...state.operations.values()].reverse();
  const shown = [
    ...ops.filter((o) => o.state === "running"),
    ...ops.filter((o) => o.state !== "running"),
  ].slice(0, shownOperations);
  for (const o of ops) if (!shown.includes(o)) state.operations.delete(o.id);
  $("operation-list").replaceChildren(...shown.map(operationItem));
}

function onEvent(e) {
  if (state.events.some((x) => x.id === e.id && x.at === e.at)) return;
  state.events.unshift(e);
  state.events.length = Math.min(state.events.length, 100);
  $("event-list").prepend(eventItem(e));
  while ($("event-list").children.length > 100) $("event-list").lastChild.remove();
}

// ---- dialogs ----

function wireDialog(dialog) {
  for (const b of dialog.querySelectorAll("[data-close]")) {
    b.addEventListener("click", () => dialog.close());
  }
}

function problemOf(dialog, message) {
  dialog.querySelector(".problem").textContent = message ?? "";
}

function openCreate() {
  const d = $("create-dialog");
  problemOf(d);
  $("create-form").reset();
  d.showModal();
}

async function submitCreate(ev) {
  ev.preventDefault();
  const d = $("create-dialog");
  const f = new FormData($("create-form"));
  const body = {
    name: String(f.get("name")).trim(),
    sizeBytes: Number(f.get("size")) * Number(f.get("unit")),
    replicas: Number(f.get("replicas")),
  };
  try {
    await call("POST", "/volumes", body);
    d.close();
    state.toggled.set(body.name, true);
    toast(`Volume ${body.name} created`);
  } catch (err) {
    problemOf(d, err.message);
  }
}

let deleting = "";
function openDelete(name) {
  deleting = name;
  const d = $("delete-dialog");
  problemOf(d);
  $("delete-form").reset();
  $("delete-name").textContent = name;
  d.querySelector("button.danger").disabled = true;
  d.showModal();
}

async function submitDelete(ev) {
  ev.preventDefault();
  const d = $("delete-dialog");
  try {
    await call("DELETE", `/volumes/${encodeURIComponent(deleting)}`);
    d.close();
    toast(`Volume ${deleting} deleted`);
  } catch (err) {
    problemOf(d, err.message);
  }
}

let moving = "";
function openMove(name) {
  moving = name;
  const d = $("move-dialog");
  problemOf(d);
  const v = state.snapshot.volumes.find((x) => x.name === name);
  const select = $("move-form").elements.to;
  select.replaceChildren(
    ...state.snapshot.nodes.map((n) => {
      const inSync = v.segments.every((s) =>
        s.replicas.some((r) => r.node === n.id && r.state === "in-sync")
      );
      const why = n.id === v.owner
        ? " (owner now)"
        : !n.live
        ? " (down)"
        : !inSync
        ? " (not in sync everywhere)"
        : "";
      return h("option", { value: n.id, disabled: why !== "" }, n.id + why);
    }),
  );
  const first = [...select.options].find((o) => !o.disabled);
  if (first) select.value = first.value;
  $("move-name").textContent = name;
  d.showModal();
}

async function submitMove(ev) {
  ev.preventDefault();
  const d = $("move-dialog");
  const to = $("move-form").elements.to.value;
  try {
    await call("POST", `/volumes/${encodeURIComponent(moving)}/move`, { to });
    d.close();
    toast(`Volume ${moving} moved to ${to}`);
  } catch (err) {
    problemOf(d, err.message);
  }
}

let confirmRun = null;
function confirmAction(title, text, ok, run, done) {
  const d = $("confirm-dialog");
  problemOf(d);
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = ok;
  confirmRun = { run, done };
  d.showModal();
}

async function submitConfirm(ev) {
  ev.preventDefault();
  const d = $("confirm-dialog");
  try {
    await confirmRun.run();
    d.close();
    toast(confirmRun.done);
  } catch (err) {
    problemOf(d, err.message);
  }
}

function openToken(reason) {
  const d = $("token-dialog");
  problemOf(d, reason ?? "");
  $("token-form").reset();
  if (!d.open) d.showModal();
}

function submitToken(ev) {
  ev.preventDefault();
  const value = String(new FormData($("token-form")).get("token")).trim();
  if (value) sessionStorage.setItem(tokenKey, value);
  $("token-dialog").close();
  connect();
}

// ---- start ----

function start() {
  for (const d of document.querySelectorAll("dialog")) wireDialog(d);
  $("create-button").addEventListener("click", openCreate);
  $("create-form").addEventListener("submit", submitCreate);
  $("delete-form").addEventListener("submit", submitDelete);
  $("delete-form").elements.confirm.addEventListener("input", (e) => {
    $("delete-dialog").querySelector("button.danger").disabled = e.target.value !== deleting;
  });
  $("move-form").addEventListener("submit", submitMove);
  $("confirm-form").addEventListener("submit", submitConfirm);
  $("token-form").addEventListener("submit", submitToken);
  $("token-button").addEventListener("click", () => openToken());
  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(tokenKey);
    $("token-dialog").close();
    connect();
  });
  for (const r of document.querySelectorAll('input[name="scope"]')) {
    r.addEventListener("change", () => {
      state.scope = r.value;
      drawCharts();
    });
  }
  // Charts and "now" figures move once a second with the stats (no polling: redraw only).
  setInterval(() => {
    if (state.snapshot) drawCharts();
  }, 1000);
  connect();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
