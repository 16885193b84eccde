/**
 * Small helpers shared by the benchmark modules: free loopback ports, resident memory read from
 * /proc (Linux only), running a command to completion, percentiles, and a description of the
 * machine for docs/benchmarks.md. Benchmark code: trusted, local use only; nothing listens
 * beyond 127.0.0.1.
 */
import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { cpus, totalmem } from 'node:os';

/** A TCP port on 127.0.0.1 that was free a moment ago (bound, read, released). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error('no port'))));
    });
  });
}

/** A field of /proc/<pid>/status given in kB (VmRSS, VmHWM), in bytes. */
export async function procStatusBytes(pid: number, field: 'VmRSS' | 'VmHWM'): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status);
  if (match === null) throw new Error(`no ${field} in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}

/**
 * Which cores the server under test and the load (generator and sink) may use, as taskset(1) CPU
 * lists: the pinned group gives each its own cores, so neither takes CPU time from the other.
 * null (every other group): no pinning, everything shares every core.
 */
export interface Pinning {
  server: string;
  load: string;
}

let pinning: Pinning | null = null;

/** Turns pinning on for the processes started from now on, or off (null). */
export function setPinning(p: Pinning | null): void {
  pinning = p;
}

/** The pinning in force, or null. */
export function currentPinning(): Pinning | null {
  return pinning;
}

/**
 * `file args` as the command to start for `role`: through `taskset -c <cores>` while pinning is
 * on (the process and everything it starts stay on those cores), unchanged otherwise.
 */
export function pinned(role: keyof Pinning, file: string, args: readonly string[]): [string, string[]] {
  return pinning === null ? [file, [...args]] : ['taskset', ['-c', pinning[role], file, ...args]];
}

/** Result of a finished command. */
export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion without a shell; never rejects on a non-zero exit. */
export async function run(
  file: string,
  args: readonly string[],
  options: { timeoutMs?: number; input?: string } = {},
): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = execFile(
      file,
      args,
      { timeout: options.timeoutMs ?? 60_000, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : null;
        resolve({ code, stdout, stderr: stderr || (error?.message ?? '') });
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The p-th quantile (0..1) of sorted values, nearest rank; 0 for an empty list. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[rank] ?? 0;
}

/** What the figures were measured on. */
export interface MachineInfo {
  nproc: number;
  cpuModel: string;
  memoryBytes: number;
  /** Load averages (1, 5, 15 min) just before the run, from /proc/loadavg. */
  loadBefore: string;
  /** File system type and device of the temp directory that holds both spools. */
  tmpFs: string;
  tmpDf: string;
  node: string;
  postfix: string;
  kernel: string;
}

export async function describeMachine(tmpDir: string): Promise<MachineInfo> {
  const [loadavg, fs, df, postconf, kernel] = await Promise.all([
    readFile('/proc/loadavg', 'utf8').catch(() => 'unknown'),
    run('findmnt', ['-no', 'FSTYPE,SOURCE', '-T', tmpDir]),
    run('df', ['-h', tmpDir]),
    run('postconf', ['-d', '-h', 'mail_version']),
    run('uname', ['-sr']),
  ]);
  return {
    nproc: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    memoryBytes: totalmem(),
    loadBefore: loadavg.split(' ').slice(0, 3).join(' '),
    tmpFs: await withJournalNote(fs.stdout.trim().replace(/\s+/g, ' ')),
    tmpDf: df.stdout.trim().split('\n').at(-1) ?? '',
    node: process.version,
    postfix: postconf.code === 0 ? postconf.stdout.trim() : 'not installed',
    kernel: kernel.stdout.trim(),
  };
}

/**
 * "ext4 /dev/vda" with "(no journal)" or "(journal)" added: without a journal, ext4 skips
 * inodes freed in the last minutes when it creates a file (its recently_deleted check), which
 * makes file creation much dearer after many deletions (docs/benchmarks.md). A journaled ext4
 * has /proc/fs/jbd2/<device>-<n>.
 */
async function withJournalNote(fsAndSource: string): Promise<string> {
  const [type, source] = fsAndSource.split(' ');
  if (type !== 'ext4' || source === undefined || !source.startsWith('/dev/')) return fsAndSource;
  const device = source.slice('/dev/'.length);
  const jbd2 = await readdir('/proc/fs/jbd2').catch(() => null);
  if (jbd2 === null) return fsAndSource;
  const journaled = jbd2.some((entry) => entry.startsWith(`${device}-`));
  return `${fsAndSource} (${journaled ? 'journal' : 'no journal'})`;
}

/** Throughput and latency of one timed run of sessions. */
export interface TimedRun {
  /** Messages that received a final 250 after the dot. */
  accepted: number;
  seconds: number;
  messagesPerSecond: number;
  /** The session's latency per message (MAIL, or connect, to the final 250), in milliseconds. */
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

/**
 * Runs `sessions` copies of `session` at once until they end or `timeoutMs` passes (then
 * `onTimeout` stops them: it should count the failure and destroy the sockets), and measures:
 * wall time, and `latencies` (one per accepted message, filled by the sessions; sorted here).
 */
export async function timedSessions(
  sessions: number,
  timeoutMs: number,
  session: () => Promise<unknown>,
  onTimeout: () => void,
  latencies: number[],
): Promise<TimedRun> {
  const t0 = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      onTimeout();
      resolve();
    }, timeoutMs);
  });
  await Promise.race([Promise.all(Array.from({ length: sessions }, session)), timeout]);
  clearTimeout(timer);
  const seconds = (performance.now() - t0) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    accepted: latencies.length,
    seconds,
    messagesPerSecond: latencies.length / seconds,
    p50Ms: percentile(latencies, 0.5),
    p99Ms: percentile(latencies, 0.99),
    maxMs: latencies.at(-1) ?? 0,
  };
}
