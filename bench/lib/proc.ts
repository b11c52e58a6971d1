import { readFileSync } from 'node:fs';
import os from 'node:os';

/** Clock ticks per second for /proc/<pid>/stat; 100 on every Linux this runs on. */
const CLOCK_TICKS = 100;

export interface ProcSample {
  /** User + system CPU time, in seconds. */
  cpuSeconds: number;
  rssBytes: number;
}

/** Reads CPU time and resident memory of a process from /proc. */
export function readProc(pid: number): ProcSample {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may contain spaces; the fields after its closing ')' do not.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rss = /VmRSS:\s+(\d+) kB/.exec(status);
  return { cpuSeconds: (utime + stime) / CLOCK_TICKS, rssBytes: Number(rss?.[1] ?? 0) * 1024 };
}

export interface ProcUsage {
  /** Average CPU over the window, in % of one core (200% = both cores of this machine). */
  cpuPercent: number;
  /** CPU time used over the window, in seconds. */
  cpuSeconds: number;
  rssPeakMB: number;
  rssEndMB: number;
}

/** Samples a process's RSS every 250 ms between `start` and `stop`, and its CPU time at both ends. */
export class ProcMonitor {
  private readonly startSample: ProcSample;
  private readonly startedAt = performance.now();
  private peak = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly pid: number) {
    this.startSample = readProc(pid);
    this.peak = this.startSample.rssBytes;
    this.timer = setInterval(() => {
      try {
        this.peak = Math.max(this.peak, readProc(pid).rssBytes);
      } catch {
        // The process may have exited; `stop` reports what was seen.
      }
    }, 250);
  }

  stop(): ProcUsage {
    clearInterval(this.timer);
    const end = readProc(this.pid);
    const seconds = (performance.now() - this.startedAt) / 1000;
    this.peak = Math.max(this.peak, end.rssBytes);
    return {
      cpuPercent: ((end.cpuSeconds - this.startSample.cpuSeconds) / seconds) * 100,
      cpuSeconds: end.cpuSeconds - this.startSample.cpuSeconds,
      rssPeakMB: this.peak / 2 ** 20,
      rssEndMB: end.rssBytes / 2 ** 20,
    };
  }
}

function readSystemTicks(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const values = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = (values[3] ?? 0) + (values[4] ?? 0);
  const total = values.reduce((sum, value) => sum + value, 0);
  return { busy: total - idle, total };
}

/**
 * Busy CPU of the whole machine over a window, in % of one core, so a reader can see how much
 * else (PostgreSQL, Redis, other programs) ran beside the server and the generator.
 */
export class SystemMonitor {
  private readonly start = readSystemTicks();
  private readonly startedAt = performance.now();

  stop(): { busyPercent: number; loadAverage: number } {
    const end = readSystemTicks();
    const seconds = (performance.now() - this.startedAt) / 1000;
    return {
      busyPercent: ((end.busy - this.start.busy) / CLOCK_TICKS / seconds) * 100,
      loadAverage: os.loadavg()[0] ?? 0,
    };
  }
}

/**
 * This process's soft limit on open files (`ulimit -n`), which its children inherit: every
 * socket a server or a generator holds counts against it.
 */
export function openFileLimit(): number {
  const limits = readFileSync('/proc/self/limits', 'utf8');
  const match = /^Max open files\s+(\d+|unlimited)/m.exec(limits);
  return !match || match[1] === 'unlimited' ? Number.POSITIVE_INFINITY : Number(match[1]);
}
