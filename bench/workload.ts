/**
 * The like-for-like rows of the benchmark (issue 11): one Sterna and one private Postfix, each
 * set up for the same three kinds of work, measured with the same load in the same run,
 * alternating Sterna, Postfix, Sterna…:
 *   - relay: every message relayed to a downstream smtp-sink(1) on 127.0.0.2 (Sterna: a `"*"`
 *     relay entry; Postfix: relayhost), recipient rcpt@sink.test;
 *   - maildir: local Maildir delivery (Sterna: a local mailbox; Postfix: virtual(8)), recipient
 *     rcpt@sterna.local;
 *   - discard: queued durably, then thrown away (Sterna: the discard transport; Postfix:
 *     discard(8)), recipient rcpt@bench.test.
 * Both fsync before the 250 (Sterna: spool.fsync = true; Postfix: cleanup(8)'s fsync).
 * A run is done only when the work is done: the load tool finished with every message accepted,
 * the server's queue is empty, and (relay) the sink counted every message or (maildir) every
 * message is a file in the Maildir's new/. Counts must be exact; a missing or extra message makes
 * the run an error. The headline rate is messages over the time from the start of the load until
 * the run was done ("including drain"); the acceptance rate (until the last 250) and the drain
 * time after the load are reported next to it.
 * Benchmark code: trusted, loopback only; the caller registers every stop for process exit.
 */
import { mkdir, readdir, readFile, rename } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { sleep } from './machine.js';
import { SINK_HOST, type Sink } from './outbound.js';
import { MAILDIR_DOMAIN, MAILDIR_LOCAL, startPostfix, workExtra, type PostfixInstance } from './postfix.js';
import { startSterna, type SternaInstance } from './sterna.js';

export type Kind = 'relay' | 'maildir' | 'discard';
export const KINDS: readonly Kind[] = ['relay', 'maildir', 'discard'];
export const KIND_LABEL: Record<Kind, string> = {
  relay: 'relay to a sink',
  maildir: 'local Maildir delivery',
  discard: 'discard',
};
export const RCPT: Record<Kind, string> = {
  relay: 'rcpt@sink.test',
  maildir: `${MAILDIR_LOCAL}@${MAILDIR_DOMAIN}`,
  discard: 'rcpt@bench.test',
};
export const FROM = 'sender@source.bench.local';

const KiB = 1024;
/** Bound on the wait for the work to be done after the load ended. */
const DONE_TIMEOUT_MS = 120_000;
/**
 * Poll interval while waiting for the work to be done (only after the load ended): short at
 * first, where a server with little left to do finishes within tens of milliseconds and a 25 ms
 * step would be most of what is measured, then longer, so that a long drain is not slowed by
 * the benchmark's own reads.
 */
const FIRST_POLL_MS = 5;
const FIRST_POLLS_FOR_MS = 200;
const POLL_MS = 25;

/** One server as the runner sees it. */
export interface Server {
  name: 'Sterna' | 'Postfix';
  port: number;
  /** Accepted messages not yet finished. */
  queued: () => Promise<number>;
  /** Files in the Maildir recipient's new/ directory. */
  maildirCount: () => Promise<number>;
  /** Moves the delivered Maildir files aside (between runs, not timed; clearDir says why not deleted). */
  clearMaildir: () => Promise<void>;
  /** Deliveries the server logged as done, when it logs them (Postfix status=sent); null when not. */
  loggedDeliveries: () => Promise<number | null>;
  /** CPU time the server's processes have used so far, in ms (processTreeCpuMs of its root). */
  cpuMs: () => Promise<number>;
}

/** What a load tool reports for one run. */
export interface LoadOutcome {
  ok: boolean;
  accepted: number;
  seconds: number;
  error: string;
  /** End-to-end latency percentiles, when the tool measures them. */
  p50Ms?: number;
  p99Ms?: number;
  /** TLS handshakes and resumed ones, when the tool does TLS. */
  handshakes?: number;
  resumed?: number;
  tlsVersion?: string;
  cipher?: string;
  serverKey?: string;
  /**
   * When the load really started (ms since the epoch), for a tool that spends time starting up
   * first (connect-load's child processes); the run is timed from here instead of from the call.
   */
  startedAtMs?: number;
}

export interface Run {
  messages: number;
  load: LoadOutcome;
  /** Seconds from the start of the load until the work was done (or the timeout). */
  doneSeconds: number;
  /** doneSeconds minus the load's own seconds. */
  drainSeconds: number;
  /** Messages delivered as counted at the sink / in the Maildir / accepted and finished (discard). */
  delivered: number;
  /**
   * CPU time the whole machine spent from the start of the load until the work was done, in ms:
   * the server, the load generator and the sink together (machineBusyMs).
   */
  machineCpuMs: number;
  /** CPU time the server's own processes spent over the same span, in ms: what it would cost
   * with the load generator and the sink on another machine. */
  serverCpuMs: number;
  ok: boolean;
  error: string;
}

export interface Series {
  runs: Run[];
  /** Median, lowest and highest messages/s including the drain (0 for a failed run). */
  median: number;
  min: number;
  max: number;
  /** Median messages/s until the last 250. */
  acceptMedian: number;
  /** Longest drain after the load. */
  maxDrainSeconds: number;
  p50Ms: number | null;
  p99Ms: number | null;
  /** Median machine CPU per message, ms (the server, the load generator and the sink). */
  cpuMsPerMessage: number;
  /** Median CPU per message of the server's own processes, ms. */
  serverCpuMsPerMessage: number;
  allOk: boolean;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)] ?? 0;
}

export function series(runs: Run[]): Series {
  const rates = runs.map((r) => (r.ok ? r.messages / r.doneSeconds : 0));
  const lat = (f: 'p50Ms' | 'p99Ms'): number | null => {
    const v = runs.map((r) => r.load[f]).filter((x): x is number => x !== undefined);
    return v.length === 0 ? null : median(v);
  };
  return {
    runs,
    median: median(rates),
    min: Math.min(...rates),
    max: Math.max(...rates),
    acceptMedian: median(runs.map((r) => (r.load.ok ? r.messages / r.load.seconds : 0))),
    maxDrainSeconds: Math.max(0, ...runs.map((r) => r.drainSeconds)),
    p50Ms: lat('p50Ms'),
    p99Ms: lat('p99Ms'),
    cpuMsPerMessage: median(runs.map((r) => r.machineCpuMs / r.messages)),
    serverCpuMsPerMessage: median(runs.map((r) => r.serverCpuMs / r.messages)),
    allOk: runs.every((r) => r.ok),
  };
}

/** Clock ticks per second of /proc/stat (USER_HZ, 100 on every Linux platform Node runs on). */
const USER_HZ = 100;

/**
 * CPU time the whole machine has spent busy since boot, in ms, from /proc/stat's first line: user,
 * nice, system, irq and softirq (not idle, iowait or steal, which is another guest's). The
 * difference across a run is the work of every process in it; on a quiet machine, the server's,
 * the load generator's and the sink's.
 */
export async function machineBusyMs(): Promise<number> {
  const first = (await readFile('/proc/stat', 'latin1')).split('\n', 1)[0] ?? '';
  const f = first.trim().split(/\s+/).slice(1).map(Number);
  const tick = (i: number): number => f[i] ?? 0;
  return ((tick(0) + tick(1) + tick(2) + tick(5) + tick(6)) * 1000) / USER_HZ;
}

/**
 * CPU time used so far by a process and every process below it, in ms: the sum over the live
 * processes of the tree (from /proc/<pid>/stat) of utime, stime, cutime and cstime. A child that
 * has exited and been waited for counts in its parent's cutime and cstime, so Postfix's
 * short-lived smtpd and cleanup processes are included. 0 if the root is gone.
 */
export async function processTreeCpuMs(root: number): Promise<number> {
  const parentOf = new Map<number, number>();
  const ticksOf = new Map<number, number>();
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await readFile(`/proc/${name}/stat`, 'latin1').catch(() => '');
    // Fields after "(comm) ": state ppid … utime(14) stime(15) cutime(16) cstime(17), 1-based.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (f.length < 15) continue;
    const pid = Number(name);
    parentOf.set(pid, Number(f[1]));
    ticksOf.set(pid, Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]));
  }
  const inTree = (pid: number): boolean => {
    for (let p: number | undefined = pid, hops = 0; p !== undefined && p > 1 && hops < 64; hops++) {
      if (p === root) return true;
      p = parentOf.get(p);
    }
    return false;
  };
  let ticks = 0;
  for (const [pid, t] of ticksOf) if (inTree(pid)) ticks += t;
  return (ticks * 1000) / USER_HZ;
}

/** Sink and Maildir counts when the last run was done, to catch messages that arrive later. */
const settledSink = new WeakMap<Sink, number>();
const settledMaildir = new WeakMap<Server, number>();

/**
 * One run of `messages` messages of `kind` against `server` with `load`: clears the Maildir,
 * checks the queue is empty, runs the load, then polls until the work is done and checks counts.
 */
async function measureOnce(
  server: Server,
  sink: Sink,
  kind: Kind,
  messages: number,
  load: () => Promise<LoadOutcome>,
): Promise<Run> {
  const fail = (error: string, partial: Partial<Run> = {}): Run => ({
    messages,
    load: { ok: false, accepted: 0, seconds: 0, error },
    doneSeconds: 0,
    drainSeconds: 0,
    delivered: 0,
    machineCpuMs: 0,
    serverCpuMs: 0,
    ...partial,
    ok: false,
    error,
  });
  // A late duplicate of an earlier run would otherwise hide in this run's counts.
  const late: string[] = [];
  const sinkSettled = settledSink.get(sink);
  if (sinkSettled !== undefined && sink.count() !== sinkSettled)
    late.push(`the sink counted ${sink.count() - sinkSettled}`);
  const files = await server.maildirCount();
  const maildirSettled = settledMaildir.get(server);
  if (maildirSettled !== undefined && files !== maildirSettled)
    late.push(`${server.name}'s Maildir got ${files - maildirSettled}`);
  if (late.length > 0) return fail(`after the previous run was done, ${late.join(' and ')} more`);
  await server.clearMaildir();
  const before = await server.queued();
  if (before !== 0) return fail(`${server.name}: ${before} messages queued before the run`);
  const sinkBefore = sink.count();
  const loggedBefore = await server.loggedDeliveries();

  const serverCpuBefore = await server.cpuMs();
  const called = Date.now();
  const cpuBefore = await machineBusyMs();
  const outcome = await load();
  const t0 = outcome.startedAtMs ?? called;
  if (!outcome.ok || outcome.accepted !== messages)
    return fail(`load: ${outcome.error || `${outcome.accepted} of ${messages} accepted`}`, { load: outcome });

  const delivered = async (): Promise<number> => {
    switch (kind) {
      case 'relay':
        return sink.count() - sinkBefore;
      case 'maildir':
        return server.maildirCount();
      case 'discard':
        return messages - (await server.queued());
    }
  };
  let done = false;
  const loadEnded = Date.now();
  while (Date.now() - t0 < outcome.seconds * 1000 + DONE_TIMEOUT_MS) {
    if ((await delivered()) >= messages && (await server.queued()) === 0) {
      done = true;
      break;
    }
    await sleep(Date.now() - loadEnded < FIRST_POLLS_FOR_MS ? FIRST_POLL_MS : POLL_MS);
  }
  const doneSeconds = (Date.now() - t0) / 1000;
  const machineCpuMs = (await machineBusyMs()) - cpuBefore;
  const serverCpuMs = (await server.cpuMs()) - serverCpuBefore;
  const count = await delivered();
  const base = {
    load: outcome,
    doneSeconds,
    drainSeconds: Math.max(0, doneSeconds - outcome.seconds),
    delivered: count,
    machineCpuMs,
    serverCpuMs,
  };
  if (!done)
    return fail(`not done after ${DONE_TIMEOUT_MS / 1000} s: ${count} of ${messages} delivered`, base);
  if (count !== messages) return fail(`${count} delivered for ${messages} accepted`, base);
  if (loggedBefore !== null) {
    // Postfix logs through postlogd: give the last lines a moment, then require the exact count.
    let logged = 0;
    const deadline = performance.now() + 10_000;
    while (performance.now() < deadline) {
      logged = ((await server.loggedDeliveries()) ?? 0) - loggedBefore;
      if (logged >= messages) break;
      await sleep(100);
    }
    if (logged !== messages) return fail(`${server.name} logged ${logged} deliveries for ${messages}`, base);
  }
  return { messages, ...base, ok: true, error: '' };
}

async function countDir(dir: string): Promise<number> {
  try {
    return (await readdir(dir)).length;
  } catch {
    return 0;
  }
}

/** Archives moved aside so far, for unique names. */
let archives = 0;

/**
 * Empties a Maildir's new/ between runs by moving its files into a fresh directory beside the
 * Maildir (removed with the benchmark's directory at the end), not by deleting them. On ext4
 * without a journal, as on the measured machine, the inode allocator skips inodes freed in the
 * last minutes (fs/ext4/ialloc.c, recently_deleted), reading their inode-table block for each:
 * after deleting the 3,000 files of a run, creating a file cost ~300–450 µs of kernel time
 * instead of ~30 µs (perf: recently_deleted and find_inode_bit under openat). That cost came
 * from the benchmark's own deletions, not from either server, and weighed most on the cheaper
 * server. A mailbox does not lose thousands of messages a second in real use.
 */
async function clearDir(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return;
  }
  if (names.length === 0) return;
  const archive = join(dirname(dirname(dir)), `.bench-archive-${++archives}`);
  await mkdir(archive);
  for (const n of names) await rename(join(dir, n), join(archive, n));
}

/** Sterna and Postfix set up for all three kinds; stop() stops both. */
export interface Pair {
  sterna: Server;
  postfix: Server | null;
  sternaInstance: SternaInstance;
  postfixInstance: PostfixInstance | null;
  stop: () => Promise<void>;
}

export interface PairOptions {
  /** An empty directory (mode 0755 for Postfix). */
  dir: string;
  sink: Sink;
  withPostfix: boolean;
  /** A certificate for STARTTLS on both (Sterna [tls]; Postfix smtpd_tls_*). */
  tls?: { certFile: string; keyFile: string } | undefined;
  onCleanup: (stop: () => void) => void;
}

/** Sterna's config for the three kinds: relay `"*"` to the sink, a local mailbox, bench.test discarded. */
function sternaWork(o: PairOptions): { transportEntries: string; extraConfig: string } {
  const tls =
    o.tls === undefined
      ? ''
      : `\n[tls]\ncert_file = ${JSON.stringify(o.tls.certFile)}\nkey_file = ${JSON.stringify(o.tls.keyFile)}\n`;
  return {
    transportEntries: `"*" = { relay = "[${SINK_HOST}]:${o.sink.port}", tls = "none" }`,
    extraConfig: `\n[relay]\ntrusted_networks = ["127.0.0.1/32"]\n${tls}`,
  };
}

export async function startPair(o: PairOptions): Promise<Pair> {
  await mkdir(join(o.dir, 'sterna'));
  const s = await startSterna({
    dir: join(o.dir, 'sterna'),
    users: [RCPT.maildir],
    ...sternaWork(o),
  });
  o.onCleanup(s.kill);
  const sternaNew = join(s.maildirRoot, MAILDIR_DOMAIN, MAILDIR_LOCAL, 'new');
  const sterna: Server = {
    name: 'Sterna',
    port: s.port,
    queued: () => Promise.resolve(s.liveMessages()),
    maildirCount: () => countDir(sternaNew),
    clearMaildir: () => clearDir(sternaNew),
    loggedDeliveries: () => Promise.resolve(null),
    cpuMs: () => processTreeCpuMs(s.pid),
  };
  let p: PostfixInstance | null = null;
  let postfix: Server | null = null;
  if (o.withPostfix) {
    const dir = join(o.dir, 'postfix');
    await mkdir(dir);
    try {
      p = await startPostfix(dir, `[${SINK_HOST}]:${o.sink.port}`, (uid, gid) =>
        workExtra(dir, uid, gid, o.tls),
      );
    } catch (err) {
      await s.stop();
      throw err;
    }
    const instance = p;
    o.onCleanup(instance.stopSync);
    postfix = {
      name: 'Postfix',
      port: instance.port,
      queued: instance.queuedMessages,
      maildirCount: () => countDir(instance.maildirNew),
      clearMaildir: () => clearDir(instance.maildirNew),
      loggedDeliveries: instance.sentCount,
      cpuMs: async () => {
        const master = await instance.masterPid();
        return master === null ? 0 : processTreeCpuMs(master);
      },
    };
  }
  return {
    sterna,
    postfix,
    sternaInstance: s,
    postfixInstance: p,
    stop: async () => {
      await s.stop();
      await p?.stop().catch(() => undefined);
    },
  };
}

/** "20 × 1 KiB" */
export const caseLabel = (sessions: number, bodyBytes: number): string =>
  `${sessions} × ${bodyBytes >= KiB ? `${bodyBytes / KiB} KiB` : `${bodyBytes} B`}`;

/**
 * One run of `messages` messages of `kind` against `server` with `load` (measureOnce), then the
 * counts as the run left them (checked at the start of the next run).
 */
export async function measureRun(
  server: Server,
  sink: Sink,
  kind: Kind,
  messages: number,
  load: () => Promise<LoadOutcome>,
): Promise<Run> {
  const run = await measureOnce(server, sink, kind, messages, load);
  settledSink.set(sink, sink.count());
  settledMaildir.set(server, await server.maildirCount());
  return run;
}
