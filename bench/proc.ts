/** What /proc says about processes and the machine (Linux). */

/** Name under which the sampler reports the whole machine's busy CPU (and host.* its parts). */
export const hostCpuName = "host";

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on Linux). */
const ticksPerSecond = 100;

/** VmRSS and VmHWM of a process in bytes, or null if it is gone. */
export function memoryOf(pid: number): { rssBytes: number; peakBytes: number } | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/status`);
  } catch {
    return null;
  }
  const kib = (field: string) => {
    const match = text.match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m"));
    return match ? Number(match[1]) * 1024 : NaN;
  };
  return { rssBytes: kib("VmRSS"), peakBytes: kib("VmHWM") };
}

/** User + system CPU seconds a process has used, or null if it is gone. */
export function cpuSecondsOf(pid: number): number | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return null;
  }
  // The command name (field 2) may hold spaces; fields after its ")" are plain.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after ")".
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond;
}

/**
 * CPU seconds of the whole machine, summed over cores (from /proc/stat):
 * busy (everything but idle and iowait) and some of its parts, or null.
 */
export function hostCpuSecondsOf(): Record<string, number> | null {
  try {
    const line = Deno.readTextFileSync("/proc/stat").split("\n", 1)[0];
    // cpu user nice system idle iowait irq softirq steal ...
    const [user, nice, system, idle, iowait, irq, softirq, steal] = line.trim().split(/\s+/)
      .slice(1, 9).map((t) => Number(t) / ticksPerSecond);
    return {
      [hostCpuName]: user + nice + system + irq + softirq + steal,
      [`${hostCpuName}.user`]: user + nice,
      [`${hostCpuName}.system`]: system,
      [`${hostCpuName}.softirq`]: softirq + irq,
      [`${hostCpuName}.steal`]: steal,
      [`${hostCpuName}.iowait`]: iowait,
      [`${hostCpuName}.idle`]: idle,
    };
  } catch {
    return null;
  }
}

/** The 1-minute load average, or null. */
export function loadAverage(): number | null {
  try {
    return Number(Deno.readTextFileSync("/proc/loadavg").split(" ")[0]);
  } catch {
    return null;
  }
}

/** CPU seconds of every process on the machine, by pid, with its command name. */
export function allProcessesCpu(): Map<number, { name: string; seconds: number }> {
  const out = new Map<number, { name: string; seconds: number }>();
  try {
    for (const entry of Deno.readDirSync("/proc")) {
      if (!/^\d+$/.test(entry.name)) continue;
      const pid = Number(entry.name);
      try {
        const text = Deno.readTextFileSync(`/proc/${pid}/stat`);
        const name = text.slice(text.indexOf("(") + 1, text.lastIndexOf(")"));
        const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
        out.set(pid, { name, seconds: (Number(fields[11]) + Number(fields[12])) / ticksPerSecond });
      } catch {
        // exited meanwhile
      }
    }
  } catch {
    // no /proc
  }
  return out;
}

/** A process's command line (first 200 characters), or "" if it is gone. */
export function commandLineOf(pid: number): string {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/cmdline`).replaceAll("\0", " ").trim().slice(0, 200);
  } catch {
    return "";
  }
}

/** Name under which the sampler reports processes the bench did not start. */
export const othersCpuName = "others";

/**
 * CPU use of named processes over an interval, in percent of one core; plus
 * the whole machine's under "host" (all cores, so up to cores x 100; with
 * host.user, host.system, host.softirq, host.steal, host.iowait, host.idle),
 * which shows what the kernel (loopback TCP, file system) and other
 * processes took.
 */
export class CpuSampler {
  private startSeconds = new Map<string, number>();
  private startWallMs = 0;
  private startAll = new Map<number, { name: string; seconds: number }>();
  result: Record<string, number> = {};
  /** CPU seconds each named process (and "host", "others") used over the interval, unrounded. */
  seconds: Record<string, number> = {};
  /** Length of the interval in seconds. */
  wallSeconds = 0;
  /** Processes the bench did not start that used at least 5% of a core, busiest first. */
  others: { pid: number; name: string; command: string; percent: number }[] = [];

  constructor(private readonly pids: () => Record<string, number | undefined>) {}

  private sample(): Map<string, number> {
    const seconds = new Map<string, number>();
    for (const [name, pid] of Object.entries(this.pids())) {
      const used = pid === undefined ? null : cpuSecondsOf(pid);
      if (used !== null) seconds.set(name, used);
    }
    for (const [name, used] of Object.entries(hostCpuSecondsOf() ?? {})) seconds.set(name, used);
    return seconds;
  }

  before(): void {
    this.startWallMs = performance.now();
    this.startSeconds = this.sample();
    this.startAll = allProcessesCpu();
  }

  after(): void {
    const wallSeconds = (performance.now() - this.startWallMs) / 1000;
    const end = this.sample();
    this.result = {};
    this.seconds = {};
    this.wallSeconds = wallSeconds;
    for (const [name, seconds] of end) {
      const start = this.startSeconds.get(name);
      if (start === undefined) continue;
      this.seconds[name] = seconds - start;
      this.result[name] = Math.round(((seconds - start) / wallSeconds) * 100);
    }
    const ours = new Set(Object.values(this.pids()));
    let othersSeconds = 0;
    this.others = [];
    for (const [pid, now] of allProcessesCpu()) {
      if (ours.has(pid)) continue;
      const used = now.seconds - (this.startAll.get(pid)?.seconds ?? 0);
      othersSeconds += used;
      const percent = Math.round((used / wallSeconds) * 100);
      if (percent >= 5) {
        this.others.push({ pid, name: now.name, command: commandLineOf(pid), percent });
      }
    }
    this.others.sort((a, b) => b.percent - a.percent);
    this.seconds[othersCpuName] = othersSeconds;
    this.result[othersCpuName] = Math.round((othersSeconds / wallSeconds) * 100);
  }
}

async function commandOutput(cmd: string, args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
    const decoder = new TextDecoder();
    return (decoder.decode(out.stdout) + decoder.decode(out.stderr)).trim();
  } catch (err) {
    return `unknown (${(err as Error).message})`;
  }
}

export interface MachineInfo {
  cores: number;
  cpuModel: string;
  memoryBytes: number;
  kernel: string;
  deno: string;
  natsServer: string;
  date: string;
  /** 1-minute load average when the bench started: other work on the machine skews results. */
  loadAverage: number | null;
}

export async function machineInfo(): Promise<MachineInfo> {
  let cpuModel = "unknown";
  let memoryBytes = NaN;
  try {
    cpuModel = Deno.readTextFileSync("/proc/cpuinfo").match(/^model name\s*:\s*(.*)$/m)?.[1] ??
      cpuModel;
    const kib = Deno.readTextFileSync("/proc/meminfo").match(/^MemTotal:\s+(\d+) kB/m)?.[1];
    if (kib) memoryBytes = Number(kib) * 1024;
  } catch {
    // not Linux: leave unknown
  }
  return {
    cores: navigator.hardwareConcurrency,
    cpuModel,
    memoryBytes,
    kernel: Deno.osRelease(),
    deno: (await commandOutput(Deno.execPath(), ["--version"])).split("\n").join(", "),
    natsServer: await commandOutput("nats-server", ["--version"]),
    date: new Date().toISOString(),
    loadAverage: loadAverage(),
  };
}
