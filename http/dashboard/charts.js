// IO history from the stream's `stats` events and three uPlot charts (IOPS, throughput,
// latency) with one series per volume or per node.

/** Seconds of history kept and shown. */
const windowSeconds = 180;
const palette = [
  "#2f6db5",
  "#c2571a",
  "#2e8b57",
  "#8a3fb0",
  "#b8860b",
  "#17808a",
  "#b03a5b",
  "#5a6470",
];

export class IoHistory {
  constructor() {
    /** second -> Map(key -> { ops, bytes, latSum, latOps }) ; key "volume:NAME" or "node:ID" */
    this.seconds = new Map();
    /** key -> latest rates { iops, bytesPerSec, latencyMs, at } */
    this.latest = new Map();
  }

  add(stats) {
    const second = Math.round(Date.parse(stats.at) / 1000);
    const perSec = 1000 / stats.intervalMs;
    if (!this.seconds.has(second)) this.seconds.set(second, new Map());
    const bucket = this.seconds.get(second);
    let nodeOps = 0, nodeBytes = 0, nodeLat = 0, nodeLatOps = 0;
    for (const v of stats.volumes) {
      const ops = v.readOps + v.writeOps + v.otherOps;
      const by = v.readBytes + v.writeBytes;
      const lat = v.meanLatencyMs === null ? 0 : v.meanLatencyMs * ops;
      add(bucket, `volume:${v.volume}`, ops * perSec, by * perSec, lat, ops);
      nodeOps += ops;
      nodeBytes += by;
      nodeLat += lat;
      nodeLatOps += ops;
      this.latest.set(`volume:${v.volume}`, rates(ops * perSec, by * perSec, lat, ops, second));
    }
    add(bucket, `node:${stats.node}`, nodeOps * perSec, nodeBytes * perSec, nodeLat, nodeLatOps);
    this.latest.set(
      `node:${stats.node}`,
      rates(nodeOps * perSec, nodeBytes * perSec, nodeLat, nodeLatOps, second),
    );
    for (const s of this.seconds.keys()) if (s < second - windowSeconds) this.seconds.delete(s);
  }

  /** The latest rates of a volume or node (null when it had no IO in the last 3 s). */
  current(key, nowSecond) {
    const r = this.latest.get(key);
    if (!r || nowSecond - r.second > 3) return null;
    return r;
  }

  /** uPlot data: [xs, ...series] for the keys with the given prefix. */
  data(prefix, names) {
    const xs = [...this.seconds.keys()].sort((a, b) => a - b);
    const series = names.map((name) => {
      const key = `${prefix}:${name}`;
      return {
        iops: xs.map((x) => this.seconds.get(x).get(key)?.ops ?? 0),
        bytes: xs.map((x) => (this.seconds.get(x).get(key)?.bytes ?? 0) / 1048576),
        latency: xs.map((x) => {
          const b = this.seconds.get(x).get(key);
          return b && b.latOps ? b.latSum / b.latOps : null;
        }),
      };
    });
    return { xs, series };
  }
}

function add(bucket, key, ops, bytes, latSum, latOps) {
  const b = bucket.get(key) ?? { ops: 0, bytes: 0, latSum: 0, latOps: 0 };
  b.ops += ops;
  b.bytes += bytes;
  b.latSum += latSum;
  b.latOps += latOps;
  bucket.set(key, b);
}

function rates(iops, bytesPerSec, latSum, latOps, second) {
  return { iops, bytesPerSec, latencyMs: latOps ? latSum / latOps : null, second };
}

export class Charts {
  constructor(elements) {
    this.elements = elements; // { iops, bytes, latency }
    this.plots = {};
    this.names = "";
    this.observer = new ResizeObserver(() => this.resize());
    for (const el of Object.values(elements)) this.observer.observe(el);
  }

  size(el) {
    const width = Math.max(200, Math.floor(el.clientWidth));
    return { width, height: 170 };
  }

  resize() {
    for (const [k, plot] of Object.entries(this.plots)) plot.setSize(this.size(this.elements[k]));
  }

  /** Redraws with one series per name; rebuilds the plots when the names change. */
  update(history, prefix, names) {
    if (typeof uPlot === "undefined") return;
    const { xs, series } = history.data(prefix, names);
    const key = `${prefix}:${names.join(",")}`;
    if (key !== this.names) {
      for (const p of Object.values(this.plots)) p.destroy();
      this.plots = {};
      this.names = key;
      for (const metric of ["iops", "bytes", "latency"]) {
        const el = this.elements[metric];
        const opts = {
          ...this.size(el),
          legend: { live: false },
          cursor: { drag: { x: false, y: false } },
          scales: {
            x: { time: true },
            y: { range: (_u, _min, max) => [0, Math.max(max * 1.1, metric === "latency" ? 1 : 5)] },
          },
          axes: [
            { stroke: "#5b6573", grid: { stroke: "#e7eaee" }, ticks: { stroke: "#e7eaee" } },
            {
              stroke: "#5b6573",
              grid: { stroke: "#e7eaee" },
              ticks: { stroke: "#e7eaee" },
              size: 48,
            },
          ],
          series: [
            {},
            ...names.map((name, i) => ({
              label: name,
              stroke: palette[i % palette.length],
              width: 1.6,
              dash: i >= palette.length ? [6, 3] : undefined,
              spanGaps: metric === "latency",
              points: { show: false },
              value: (_u, v) => v === null ? "—" : v.toFixed(metric === "iops" ? 0 : 2),
            })),
          ],
        };
        // deno-lint-ignore no-undef
        this.plots[metric] = new uPlot(opts, [xs, ...series.map((s) => s[metric])], el);
      }
      return;
    }
    for (const metric of ["iops", "bytes", "latency"]) {
      this.plots[metric].setData([xs, ...series.map((s) => s[metric])]);
    }
  }
}
