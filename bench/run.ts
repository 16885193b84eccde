/**
 * `npm run bench`: the receive benchmark, Sterna side by side with a private Postfix instance on
 * the same machine in the same run (issue 3). For 1, 20 and 100 concurrent sessions and 1 KiB
 * and 100 KiB messages it measures:
 *   - durable messages accepted per second with smtp-source(1), the same arguments for both
 *     servers (the headline, and the Sterna/Postfix ratio);
 *   - p50/p99 time from MAIL to the final 250 with bench/load.ts (and that tool's own rate);
 *   - that each server delivers (discards) everything it accepted, and how long the queue takes
 *     to drain after the load stops;
 * plus Sterna's resident memory with 5,000 idle connections and an extra row with real Maildir
 * delivery. Prints markdown tables and writes JSON to bench/results/.
 * Then the outbound benchmark (issue 4, bench/outbound.ts): spool to a local smtp-sink, Sterna
 * next to Postfix; `--only outbound` runs that part alone.
 * STERNA_BENCH_SCALE (default 1) scales every message count, e.g. 0.1 for a quick smoke run.
 * Benchmark code: trusted, loopback only; every process it starts is stopped on exit.
 */
import { readFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openIdle } from './idle.js';
import { outboundSummary, runOutbound, type OutboundCase, type OutboundReport } from './outbound.js';
import { runLoad, type LoadResult } from './load.js';
import { describeMachine, run, sleep, type MachineInfo } from './machine.js';
import { postfixAvailable, startPostfix, type PostfixInstance } from './postfix.js';
import { runSecurityBench } from './security.js';
import { runSmtpSource, type SourceResult } from './smtp-source.js';
import { startSterna, type SternaInstance } from './sterna.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const SCALE = Number(process.env['STERNA_BENCH_SCALE'] ?? '1');
const IDLE_CONNECTIONS = 5000;
/** Each smtp-source run is repeated this many times per server; the tables give the median. */
const REPEATS = 3;
const FROM = 'sender@source.bench.local';
const TO = 'rcpt@bench.test';
const LOCAL_RCPT = 'rcpt@sterna.local';
const DRAIN_TIMEOUT_MS = 180_000;
/** Outbound cases: messages per run sized so that a run takes several seconds on a 2-core machine. */
const OUTBOUND_CASES: readonly OutboundCase[] = [
  { bodyBytes: 1 * KiB, messages: 3000 },
  { bodyBytes: 100 * KiB, messages: 1500 },
].map((c) => ({ ...c, messages: Math.max(20, Math.round(c.messages * SCALE)) }));
const RESULTS_DIR = fileURLToPath(new URL('../../bench/results/', import.meta.url));

interface Case {
  sessions: number;
  bodyBytes: number;
  /** Messages per run, chosen so that each run takes a few seconds on a 2-core machine. */
  messages: number;
}

const CASES: readonly Case[] = [
  { sessions: 1, bodyBytes: 1 * KiB, messages: 400 },
  { sessions: 20, bodyBytes: 1 * KiB, messages: 2000 },
  { sessions: 100, bodyBytes: 1 * KiB, messages: 3000 },
  { sessions: 1, bodyBytes: 100 * KiB, messages: 200 },
  { sessions: 20, bodyBytes: 100 * KiB, messages: 1000 },
  { sessions: 100, bodyBytes: 100 * KiB, messages: 1500 },
].map((c) => ({ ...c, messages: Math.max(c.sessions, Math.round(c.messages * SCALE)) }));

const label = (c: Case): string => `${c.sessions} × ${c.bodyBytes / KiB} KiB`;

/** One run against one server: what the load tool saw and how long the queue took to empty. */
interface Measured<T> {
  result: T;
  /** Seconds from the end of the load until the server's queue held nothing. */
  drainSeconds: number;
  drained: boolean;
}

/** The same smtp-source run repeated against one server; runs alternate between the servers. */
interface Series {
  runs: Measured<SourceResult>[];
  /** Median, lowest and highest messages/s over the runs (0 for a failed run). */
  median: number;
  min: number;
  max: number;
  allOk: boolean;
  allDrained: boolean;
  maxDrainSeconds: number;
  /** Messages accepted over all runs. */
  accepted: number;
}

interface Row {
  case: Case;
  sterna: Series;
  postfix: Series | null;
}

interface LatencyRow {
  case: Case;
  sterna: Measured<LoadResult>;
  postfix: Measured<LoadResult> | null;
}

interface Report {
  startedAt: string;
  scale: number;
  machine: MachineInfo;
  loadAfter: string;
  postfixSkipped: string | null;
  idle: {
    connections: number;
    rssBeforeBytes: number;
    rssAfterBytes: number;
    perConnectionBytes: number;
  } | null;
  throughput: Row[];
  newConnectionPerMessage: Row | null;
  latency: LatencyRow[];
  localDelivery: {
    messages: number;
    acceptSeconds: number;
    acceptPerSecond: number;
    deliveredSeconds: number;
    delivered: number;
  } | null;
  sternaPeakRssBytes: number;
  checks: { postfixSent: number; postfixAccepted: number; postfixProblems: number; sternaLive: number };
  commands: string[];
  outbound: OutboundReport | null;
}

// --- processes started by this run, stopped whatever happens ---------------------------------

const cleanups: (() => void)[] = [];
process.on('exit', () => {
  for (const c of cleanups.splice(0).reverse()) c();
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    process.stderr.write(`\n${signal}: stopping the servers\n`);
    process.exit(130);
  });
}

/** A progress line on stderr, with the 1-minute load average (other work on the machine skews figures). */
function progress(text: string): void {
  let load = '?';
  try {
    load = readFileSync('/proc/loadavg', 'utf8').split(' ')[0] ?? '?';
  } catch {
    // not Linux: no load figure
  }
  process.stderr.write(`${new Date().toISOString().slice(11, 19)} load ${load} ${text}\n`);
}

/** Polls until count() is 0; returns the seconds it took and whether it got there. */
async function waitEmpty(
  count: () => Promise<number> | number,
): Promise<{ seconds: number; drained: boolean }> {
  const t0 = performance.now();
  while (performance.now() - t0 < DRAIN_TIMEOUT_MS) {
    if ((await count()) === 0) return { seconds: (performance.now() - t0) / 1000, drained: true };
    await sleep(50);
  }
  return { seconds: DRAIN_TIMEOUT_MS / 1000, drained: false };
}

async function measure<T>(
  load: () => Promise<T>,
  queued: () => Promise<number> | number,
): Promise<Measured<T>> {
  const result = await load();
  const drain = await waitEmpty(queued);
  return { result, drainSeconds: drain.seconds, drained: drain.drained };
}

// --- the parts of the run ---------------------------------------------------------------------

async function idleMemory(base: string): Promise<Report['idle']> {
  const dir = join(base, 'sterna-idle');
  await mkdir(dir);
  const sterna = await startSterna({ dir });
  cleanups.push(sterna.kill);
  try {
    await sleep(1000);
    const before = await sterna.rssBytes();
    progress(`idle: opening ${IDLE_CONNECTIONS} connections (Sterna RSS before: ${mib(before)})`);
    const idle = await openIdle('127.0.0.1', sterna.port, IDLE_CONNECTIONS);
    try {
      await sleep(1500);
      const after = await sterna.rssBytes();
      if (idle.open() !== IDLE_CONNECTIONS)
        throw new Error(`only ${idle.open()} idle connections stayed open`);
      return {
        connections: IDLE_CONNECTIONS,
        rssBeforeBytes: before,
        rssAfterBytes: after,
        perConnectionBytes: (after - before) / IDLE_CONNECTIONS,
      };
    } finally {
      idle.close();
    }
  } finally {
    await sterna.stop();
  }
}

function series(runs: Measured<SourceResult>[]): Series {
  const rates = runs.map((r) => r.result.messagesPerSecond).sort((a, b) => a - b);
  return {
    runs,
    median: rates[Math.floor((rates.length - 1) / 2)] ?? 0,
    min: rates[0] ?? 0,
    max: rates.at(-1) ?? 0,
    allOk: runs.every((r) => r.result.ok),
    allDrained: runs.every((r) => r.drained),
    maxDrainSeconds: Math.max(0, ...runs.map((r) => r.drainSeconds)),
    accepted: runs.reduce((n, r) => n + r.result.accepted, 0),
  };
}

/** Runs smtp-source `repeats` times against each server, alternating, each run after the queues emptied. */
async function sourceRow(
  c: Case,
  reuseConnections: boolean,
  repeats: number,
  sterna: SternaInstance,
  postfix: PostfixInstance | null,
  commands: Set<string>,
): Promise<Row> {
  const source = (port: number): Promise<SourceResult> =>
    runSmtpSource({ port, ...c, from: FROM, to: TO, reuseConnections, timeoutMs: 300_000 });
  const what = `smtp-source ${label(c)}${reuseConnections ? '' : ' (new connection per message)'}`;
  const s: Measured<SourceResult>[] = [];
  const p: Measured<SourceResult>[] = [];
  for (let i = 1; i <= repeats; i++) {
    progress(`${what} [${i}/${repeats}]: Sterna`);
    const m = await measure(() => source(sterna.port), sterna.liveMessages);
    commands.add(m.result.command);
    s.push(m);
    if (postfix !== null) {
      progress(`${what} [${i}/${repeats}]: Postfix`);
      p.push(await measure(() => source(postfix.port), postfix.queuedMessages));
    }
  }
  return { case: c, sterna: series(s), postfix: postfix === null ? null : series(p) };
}

async function latencyRow(
  c: Case,
  sterna: SternaInstance,
  postfix: PostfixInstance | null,
): Promise<LatencyRow> {
  const load = (port: number): Promise<LoadResult> =>
    runLoad({ host: '127.0.0.1', port, ...c, from: FROM, to: TO, timeoutMs: 300_000 });
  progress(`load.ts ${label(c)}: Sterna`);
  const s = await measure(() => load(sterna.port), sterna.liveMessages);
  let p: Measured<LoadResult> | null = null;
  if (postfix !== null) {
    progress(`load.ts ${label(c)}: Postfix`);
    p = await measure(() => load(postfix.port), postfix.queuedMessages);
  }
  return { case: c, sterna: s, postfix: p };
}

async function localDelivery(
  sterna: SternaInstance,
  commands: Set<string>,
): Promise<Report['localDelivery']> {
  const messages = Math.max(20, Math.round(2000 * SCALE));
  progress(`smtp-source 20 × 1 KiB to a local Maildir: Sterna`);
  const t0 = performance.now();
  const r = await runSmtpSource({
    port: sterna.port,
    sessions: 20,
    messages,
    bodyBytes: KiB,
    from: FROM,
    to: LOCAL_RCPT,
    reuseConnections: true,
    timeoutMs: 300_000,
  });
  commands.add(r.command);
  if (!r.ok) throw new Error(`local delivery run failed: ${r.error}`);
  const [domain, local] = ['sterna.local', 'rcpt'] as const;
  await waitEmpty(() => messages - sterna.deliveredTo(domain, local));
  return {
    messages,
    acceptSeconds: r.seconds,
    acceptPerSecond: r.messagesPerSecond,
    deliveredSeconds: (performance.now() - t0) / 1000,
    delivered: sterna.deliveredTo(domain, local),
  };
}

// --- output -----------------------------------------------------------------------------------

function mib(bytes: number): string {
  return `${(bytes / MiB).toFixed(1)} MiB`;
}
const rate = (n: number): string => Math.round(n).toLocaleString('en-US');
const ms = (n: number): string => n.toFixed(n < 10 ? 2 : 1);
const ratio = (a: number, b: number | undefined): string =>
  b === undefined || b === 0 ? 'n/a' : `${(a / b).toFixed(2)}×`;
const drainCell = (m: Series | null): string =>
  m === null ? 'n/a' : m.allDrained ? `${m.maxDrainSeconds.toFixed(2)} s` : 'NOT DRAINED';
function rateCell(m: Series | null): string {
  if (m === null) return 'n/a';
  if (!m.allOk) return `FAILED: ${m.runs.find((r) => !r.result.ok)?.result.error ?? ''}`;
  return m.runs.length === 1 ? rate(m.median) : `${rate(m.median)} (${rate(m.min)}–${rate(m.max)})`;
}

function throughputTable(rows: readonly Row[]): string {
  const lines = [
    '| sessions × size | messages per run | Sterna msg/s | Postfix msg/s | Sterna/Postfix | Sterna queue empty after | Postfix queue empty after |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const r of rows) {
    lines.push(
      `| ${label(r.case)} | ${r.case.messages} | ${rateCell(r.sterna)} | ${rateCell(r.postfix)} | ` +
        `${ratio(r.sterna.median, r.postfix?.median)} | ${drainCell(r.sterna)} | ${drainCell(r.postfix)} |`,
    );
  }
  return lines.join('\n');
}

function latencyTable(rows: readonly LatencyRow[]): string {
  const lines = [
    '| sessions × size | Sterna p50 ms | Sterna p99 ms | Postfix p50 ms | Postfix p99 ms | Sterna msg/s (load.ts) | Postfix msg/s (load.ts) | errors S/P |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const r of rows) {
    const s = r.sterna.result;
    const p = r.postfix?.result;
    lines.push(
      `| ${label(r.case)} | ${ms(s.p50Ms)} | ${ms(s.p99Ms)} | ${p ? ms(p.p50Ms) : 'n/a'} | ${p ? ms(p.p99Ms) : 'n/a'} | ` +
        `${rate(s.messagesPerSecond)} | ${p ? rate(p.messagesPerSecond) : 'n/a'} | ${s.failed}/${p ? p.failed : 'n/a'} |`,
    );
  }
  return lines.join('\n');
}

function summary(report: Report): string {
  const out: string[] = [];
  const m = report.machine;
  out.push(
    `machine: ${m.nproc} CPUs (${m.cpuModel}), ${mib(m.memoryBytes)} RAM, temp fs ${m.tmpFs}; ` +
      `${m.kernel}; node ${m.node}; postfix ${m.postfix}; load before ${m.loadBefore}, after ${report.loadAfter}`,
  );
  if (report.postfixSkipped !== null) out.push(`Postfix skipped: ${report.postfixSkipped}`);
  out.push('', 'Durable messages accepted per second (smtp-source, same arguments for both):', '');
  out.push(throughputTable(report.throughput));
  if (report.newConnectionPerMessage !== null) {
    out.push('', 'Same, one new connection per message (smtp-source without -d):', '');
    out.push(throughputTable([report.newConnectionPerMessage]));
  }
  out.push('', 'Time from MAIL to the final 250 (bench/load.ts):', '');
  out.push(latencyTable(report.latency));
  if (report.localDelivery !== null) {
    const l = report.localDelivery;
    out.push(
      '',
      `Sterna with Maildir delivery (20 × 1 KiB, ${l.messages} messages to ${LOCAL_RCPT}): ` +
        `accepted ${rate(l.acceptPerSecond)} msg/s; all ${l.delivered} in the Maildir ${l.deliveredSeconds.toFixed(2)} s ` +
        `after the first was sent (${rate(l.delivered / l.deliveredSeconds)} msg/s end to end)`,
    );
  }
  if (report.idle !== null) {
    const i = report.idle;
    out.push(
      '',
      `Idle connections: Sterna RSS ${mib(i.rssBeforeBytes)} before, ${mib(i.rssAfterBytes)} with ` +
        `${i.connections} idle connections (${(i.perConnectionBytes / KiB).toFixed(1)} KiB each)`,
    );
  }
  out.push(`Sterna peak RSS during the load runs: ${mib(report.sternaPeakRssBytes)}`);
  const c = report.checks;
  out.push(
    '',
    `Checks: Sterna spool live messages at the end: ${c.sternaLive}; Postfix accepted ${c.postfixAccepted}, ` +
      `logged status=sent ${c.postfixSent}, deferred/bounced ${c.postfixProblems}`,
  );
  const headline = report.throughput.find((r) => r.case.sessions === 20 && r.case.bodyBytes === KiB);
  if (headline?.postfix) {
    const x = headline.sterna.median / headline.postfix.median;
    const delivered = headline.sterna.allDrained && c.sternaLive === 0;
    out.push(
      `Target 1 (20 × 1 KiB, Sterna ≥ 3 × Postfix, fsync before 250, delivering all it accepts): ${x.toFixed(2)}×, ` +
        `${delivered ? 'queue drained after every run' : 'queue NOT drained'} — ${x >= 3 && delivered ? 'met' : 'NOT met'}`,
    );
  }
  if (report.idle !== null) {
    const ok = report.idle.rssAfterBytes < 100 * MiB;
    out.push(
      `Target 2 (RSS < 100 MiB with ${report.idle.connections} idle connections): ${mib(report.idle.rssAfterBytes)} — ${ok ? 'met' : 'NOT met'}`,
    );
  }
  return out.join('\n');
}

// --- main -------------------------------------------------------------------------------------

async function checkFdLimit(): Promise<void> {
  const r = await run('bash', ['-c', 'ulimit -n']);
  const limit = Number(r.stdout.trim());
  if (Number.isFinite(limit) && limit < IDLE_CONNECTIONS + 500) {
    throw new Error(
      `the descriptor limit is ${limit}; the idle test opens ${IDLE_CONNECTIONS} connections from this process. ` +
        `Run "ulimit -n 20000" first.`,
    );
  }
}

async function outbound(base: string, postfixSkipped: string | null): Promise<OutboundReport> {
  await mkdir(join(base, 'outbound'));
  return runOutbound({
    dir: join(base, 'outbound'),
    cases: OUTBOUND_CASES,
    repeats: REPEATS,
    withPostfix: postfixSkipped === null,
    onCleanup: (stop) => cleanups.push(stop),
    progress,
  });
}

async function writeResults(startedAt: string, data: unknown): Promise<void> {
  await mkdir(RESULTS_DIR, { recursive: true });
  const file = join(RESULTS_DIR, `bench-${startedAt.replace(/[:.]/g, '-')}.json`);
  await writeFile(file, `${JSON.stringify(data, null, 2)}\n`);
  progress(`results written to ${file}`);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const only = args[0] === '--only' ? args[1] : undefined;
  if (only === 'security') return runSecurityBench(); // bench/security.ts: the cost of the abuse and auth checks
  if (only !== undefined && only !== 'outbound')
    throw new Error(`--only: expected "outbound", got "${only}"`);
  if (only === undefined) await checkFdLimit();
  const base = await mkdtemp(join(tmpdir(), 'sterna-bench-'));
  // Postfix's daemons run as the postfix user and must be able to reach their directories.
  await chmod(base, 0o755);
  const machine = await describeMachine(base);
  const startedAt = new Date().toISOString();
  progress(`working directory ${base}; load average ${machine.loadBefore}`);
  const postfixSkipped = await postfixAvailable();
  if (postfixSkipped !== null) progress(postfixSkipped);
  if (only === 'outbound') {
    const out = await outbound(base, postfixSkipped);
    const m = machine;
    process.stdout.write(
      `machine: ${m.nproc} CPUs (${m.cpuModel}), ${mib(m.memoryBytes)} RAM, temp fs ${m.tmpFs}; ` +
        `${m.kernel}; node ${m.node}; postfix ${m.postfix}; load before ${m.loadBefore}\n` +
        (postfixSkipped === null ? '' : `Postfix skipped: ${postfixSkipped}\n`) +
        `\n${outboundSummary(out)}\n`,
    );
    await writeResults(startedAt, { startedAt, scale: SCALE, machine, postfixSkipped, outbound: out });
    await rm(base, { recursive: true, force: true });
    return;
  }
  const commands = new Set<string>();

  const idle = await idleMemory(base);

  await mkdir(join(base, 'sterna'));
  const sterna = await startSterna({ dir: join(base, 'sterna'), users: [LOCAL_RCPT] });
  cleanups.push(sterna.kill);
  let postfix: PostfixInstance | null = null;
  try {
    if (postfixSkipped === null) {
      await mkdir(join(base, 'postfix'));
      postfix = await startPostfix(join(base, 'postfix'));
      cleanups.push(postfix.stopSync);
    }
    // Warm-up (not reported): JIT for Node, process pools and caches for Postfix.
    const warm: Case = { sessions: 20, bodyBytes: KiB, messages: Math.max(20, Math.round(300 * SCALE)) };
    progress('warm-up');
    await sourceRow(warm, true, 1, sterna, postfix, new Set());

    const throughput: Row[] = [];
    for (const c of CASES) throughput.push(await sourceRow(c, true, REPEATS, sterna, postfix, commands));
    const headlineCase = CASES.find((c) => c.sessions === 20 && c.bodyBytes === KiB);
    const newConnectionPerMessage =
      headlineCase === undefined
        ? null
        : await sourceRow(headlineCase, false, REPEATS, sterna, postfix, commands);
    const latency: LatencyRow[] = [];
    for (const c of CASES) latency.push(await latencyRow(c, sterna, postfix));
    const local = await localDelivery(sterna, commands);

    let postfixAccepted = warm.messages;
    for (const r of [...throughput, ...(newConnectionPerMessage ? [newConnectionPerMessage] : [])])
      postfixAccepted += r.postfix?.accepted ?? 0;
    for (const r of latency) postfixAccepted += r.postfix?.result.accepted ?? 0;

    const report: Report = {
      startedAt,
      scale: SCALE,
      machine,
      loadAfter: (await run('cat', ['/proc/loadavg'])).stdout.split(' ').slice(0, 3).join(' '),
      postfixSkipped,
      idle,
      throughput,
      newConnectionPerMessage,
      latency,
      localDelivery: local,
      sternaPeakRssBytes: await sterna.peakRssBytes(),
      checks: {
        sternaLive: sterna.liveMessages(),
        postfixAccepted: postfix === null ? 0 : postfixAccepted,
        postfixSent: postfix === null ? 0 : await postfix.sentCount(),
        postfixProblems: postfix === null ? 0 : await postfix.problemCount(),
      },
      commands: [...commands],
      outbound: null,
    };
    await sterna.stop();
    await postfix?.stop().catch((err: unknown) => progress(`postfix stop: ${String(err)}`));
    report.outbound = await outbound(base, postfixSkipped);
    process.stdout.write(`${summary(report)}\n\n${outboundSummary(report.outbound)}\n`);
    await writeResults(startedAt, report);
  } finally {
    await sterna.stop();
    await postfix?.stop().catch((err: unknown) => progress(`postfix stop: ${String(err)}`));
  }
  await rm(base, { recursive: true, force: true });
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
