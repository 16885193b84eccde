/**
 * `npm run bench`: Sterna side by side with a private Postfix on the same machine in the same run,
 * each row measured like for like, alternating Sterna, Postfix, Sterna… (issues 3, 4 and 11).
 * Groups, each runnable alone with `node dist/bench/run.js --only GROUP`:
 *   - core: a new connection per message (smtp-source without -d), for three kinds of work
 *     (relay to a downstream smtp-sink, local Maildir delivery, discard; bench/workload.ts) at
 *     1, 20 and 100 sessions × 1 KiB and 100 KiB; the rate counts until the work is done;
 *   - persistent: the older rows, each session on one connection (smtp-source -d), discard;
 *   - latency: 20 sessions × 1 KiB into Maildir, a new connection per message, end-to-end p50/p99
 *     (connect to the 250 after the dot) from bench/connect-load.ts, and that generator's rate
 *     next to smtp-source's on the same row (the check of the generator);
 *   - tls: STARTTLS on every message, 20 sessions × 1 KiB into Maildir, full handshakes and
 *     resumed sessions, with an RSA-2048 and an ECDSA P-256 certificate (the same files for both);
 *   - outbound: spool to a local sink and the queue drain (bench/outbound.ts);
 *   - idle: Sterna's resident memory with 10,000 idle connections;
 *   - pinned: the 20-session rows and full STARTTLS handshakes again, with the server on half the
 *     cores and the load generator and sink on the other half (taskset), so they share no core.
 * Prints markdown tables ready to paste into docs/benchmarks.md and writes JSON to bench/results/.
 * STERNA_BENCH_SCALE (default 1) scales every message count, e.g. 0.05 for a smoke run;
 * STERNA_BENCH_REPEATS (default 3) is how many runs of each row each server gets;
 * STERNA_BENCH_DIR (default the temp directory) is where the servers keep their files.
 * Benchmark code: trusted, loopback only; every process it starts is stopped on exit.
 */
import { readFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connectLoadCommand, runConnectLoadProcesses, type TlsMode } from './connect-load.js';
import { openIdle } from './idle.js';
import { defaultWorkers } from '../src/cluster/count.js';
import { describeMachine, run, setPinning, sleep, type MachineInfo, type Pinning } from './machine.js';
import {
  outboundSummary,
  runOutbound,
  SINK_HOST,
  startSink,
  type OutboundCase,
  type Sink,
} from './outbound.js';
import { postfixAvailable } from './postfix.js';
import { runSecurityBench } from './security.js';
import { runSmtpSource } from './smtp-source.js';
import { startSterna } from './sterna.js';
import { startTlsFloor } from './tls-floor.js';
import { KEY_LABEL, makeCert, type KeyKind } from './tls-certs.js';
import {
  caseLabel,
  FROM,
  KIND_LABEL,
  KINDS,
  machineBusyMs,
  measureRun,
  processTreeCpuMs,
  RCPT,
  series,
  startPair,
  type Kind,
  type LoadOutcome,
  type Pair,
  type Run,
  type Series,
  type Server,
} from './workload.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const SCALE = Number(process.env['STERNA_BENCH_SCALE'] ?? '1');
/** Processes the connect-load generator uses (its TLS work would otherwise share one core). */
const LOAD_PROCESSES = Number(process.env['STERNA_BENCH_LOAD_PROCESSES'] ?? '2');
const IDLE_CONNECTIONS = 10_000;
/**
 * Each row is measured this many times per server, alternating; the tables give the median. More
 * runs steady the median on a machine whose speed drifts (docs/benchmarks.md), at their cost in time.
 */
const REPEATS = Number(process.env['STERNA_BENCH_REPEATS'] ?? '3');
const LOAD_TIMEOUT_MS = 300_000;
const RESULTS_DIR = fileURLToPath(new URL('../../bench/results/', import.meta.url));

interface Case {
  sessions: number;
  bodyBytes: number;
  /** Messages per run at scale 1, sized so that a run lasts 3-5 s on a 2-core machine. */
  messages: number;
}

const scaled = (c: Case): Case => ({ ...c, messages: Math.max(c.sessions, Math.round(c.messages * SCALE)) });

/** A new connection per message (the core group). */
const CORE_CASES: readonly Case[] = [
  { sessions: 1, bodyBytes: 1 * KiB, messages: 1500 },
  { sessions: 20, bodyBytes: 1 * KiB, messages: 3000 },
  { sessions: 100, bodyBytes: 1 * KiB, messages: 3000 },
  { sessions: 1, bodyBytes: 100 * KiB, messages: 600 },
  { sessions: 20, bodyBytes: 100 * KiB, messages: 2000 },
  { sessions: 100, bodyBytes: 100 * KiB, messages: 2000 },
].map(scaled);

/** One connection per session for all its messages (smtp-source -d), discard. */
const PERSISTENT_CASES: readonly Case[] = [
  { sessions: 1, bodyBytes: 1 * KiB, messages: 400 },
  { sessions: 20, bodyBytes: 1 * KiB, messages: 2000 },
  { sessions: 100, bodyBytes: 1 * KiB, messages: 3000 },
  { sessions: 1, bodyBytes: 100 * KiB, messages: 200 },
  { sessions: 20, bodyBytes: 100 * KiB, messages: 1000 },
  { sessions: 100, bodyBytes: 100 * KiB, messages: 1500 },
].map(scaled);

const LATENCY_CASE: Case = scaled({ sessions: 20, bodyBytes: 1 * KiB, messages: 3000 });
const TLS_CASE: Case = scaled({ sessions: 20, bodyBytes: 1 * KiB, messages: 1000 });
const TLS_KIND: Kind = 'maildir';
const LATENCY_KIND: Kind = 'maildir';

const OUTBOUND_CASES: readonly OutboundCase[] = [
  { bodyBytes: 1 * KiB, messages: 3000 },
  { bodyBytes: 100 * KiB, messages: 1500 },
].map((c) => ({ ...c, messages: Math.max(20, Math.round(c.messages * SCALE)) }));

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
const onCleanup = (stop: () => void): void => {
  cleanups.push(stop);
};

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

// --- load tools -------------------------------------------------------------------------------

/** smtp-source(1) with the same arguments for both servers; `reuse` adds -d. */
function smtpSource(server: Server, c: Case, kind: Kind, reuse: boolean, commands: Set<string>) {
  return async (): Promise<LoadOutcome> => {
    const r = await runSmtpSource({
      port: server.port,
      sessions: c.sessions,
      messages: c.messages,
      bodyBytes: c.bodyBytes,
      from: FROM,
      to: RCPT[kind],
      reuseConnections: reuse,
      timeoutMs: LOAD_TIMEOUT_MS,
    });
    commands.add(r.command);
    return { ok: r.ok, accepted: r.accepted, seconds: r.seconds, error: r.error };
  };
}

/** bench/connect-load.ts: a new connection per message, plain or STARTTLS. */
function connectLoad(server: Server, c: Case, kind: Kind, tls: TlsMode, commands: Set<string>) {
  return async (): Promise<LoadOutcome> => {
    const options = {
      sessions: c.sessions,
      messages: c.messages,
      bodyBytes: c.bodyBytes,
      from: FROM,
      to: RCPT[kind],
      tls,
      timeoutMs: LOAD_TIMEOUT_MS,
    };
    commands.add(connectLoadCommand(options, Math.min(LOAD_PROCESSES, c.sessions)));
    const r = await runConnectLoadProcesses(
      { host: '127.0.0.1', port: server.port, ...options },
      LOAD_PROCESSES,
    );
    return {
      ok: r.failed === 0,
      accepted: r.accepted,
      seconds: r.seconds,
      error: r.firstError,
      p50Ms: r.p50Ms,
      p99Ms: r.p99Ms,
      handshakes: r.handshakes,
      resumed: r.resumed,
      tlsVersion: r.tlsVersion,
      cipher: r.cipher,
      serverKey: r.serverKey,
      startedAtMs: r.startedAtMs,
    };
  };
}

// --- rows -------------------------------------------------------------------------------------

interface Row {
  label: string;
  messages: number;
  sterna: Series;
  postfix: Series | null;
}

/**
 * Runs a row REPEATS times per server, alternating Sterna, Postfix, Sterna…, each run complete
 * (work done, counts exact) before the next starts.
 */
async function alternate(
  what: string,
  pair: Pair,
  sink: Sink,
  kind: Kind,
  messages: number,
  load: (server: Server) => () => Promise<LoadOutcome>,
  repeats = REPEATS,
): Promise<Row> {
  const runs = new Map<Server, Run[]>();
  const servers = [pair.sterna, ...(pair.postfix === null ? [] : [pair.postfix])];
  for (let i = 1; i <= repeats; i++) {
    for (const server of servers) {
      const r = await measureRun(server, sink, kind, messages, load(server));
      const rate = r.ok ? `${Math.round(messages / r.doneSeconds)} msg/s` : `FAILED: ${r.error}`;
      progress(`${what} [${i}/${repeats}] ${server.name}: ${rate}`);
      runs.set(server, [...(runs.get(server) ?? []), r]);
    }
  }
  return {
    label: what,
    messages,
    sterna: series(runs.get(pair.sterna) ?? []),
    postfix: pair.postfix === null ? null : series(runs.get(pair.postfix) ?? []),
  };
}

// --- output -----------------------------------------------------------------------------------

const mib = (bytes: number): string => `${(bytes / MiB).toFixed(1)} MiB`;
const rate = (n: number): string => Math.round(n).toLocaleString('en-US');

/** The middle value (the lower middle of an even count); 0 for none. */
const median = (v: readonly number[]): number =>
  [...v].sort((a, b) => a - b)[Math.floor((v.length - 1) / 2)] ?? 0;
const ms = (n: number | null): string => (n === null ? 'n/a' : n.toFixed(n < 10 ? 2 : 1));
const x = (s: Series, p: Series | null): number | null =>
  p === null || !p.allOk || !s.allOk || p.median === 0 ? null : s.median / p.median;
const ratioCell = (s: Series, p: Series | null): string => {
  const r = x(s, p);
  return r === null ? 'n/a' : `${r.toFixed(2)}×`;
};
function rateCell(m: Series | null): string {
  if (m === null) return 'n/a';
  if (!m.allOk) return `FAILED: ${m.runs.find((r) => !r.ok)?.error ?? ''}`;
  return m.runs.length === 1 ? rate(m.median) : `${rate(m.median)} (${rate(m.min)}–${rate(m.max)})`;
}
const acceptCell = (m: Series | null): string => (m === null ? 'n/a' : rate(m.acceptMedian));
const drainCell = (m: Series | null): string => (m === null ? 'n/a' : `${m.maxDrainSeconds.toFixed(2)} s`);
const latencyCell = (m: Series | null): string => (m === null ? 'n/a' : `${ms(m.p50Ms)} / ${ms(m.p99Ms)}`);
const cpuCell = (m: Series | null): string => (m === null || !m.allOk ? 'n/a' : m.cpuMsPerMessage.toFixed(2));
const ownCpuCell = (m: Series | null): string =>
  m === null || !m.allOk ? 'n/a' : m.serverCpuMsPerMessage.toFixed(2);
/** How many times less CPU per message Sterna's processes used than Postfix's. */
const ownCpuRatio = (s: Series, p: Series | null): number | null =>
  p === null || !p.allOk || !s.allOk || s.serverCpuMsPerMessage === 0
    ? null
    : p.serverCpuMsPerMessage / s.serverCpuMsPerMessage;
const ownCpuRatioCell = (s: Series, p: Series | null): string => {
  const r = ownCpuRatio(s, p);
  return r === null ? 'n/a' : `${r.toFixed(2)}×`;
};

function throughputTable(rows: readonly Row[]): string {
  const lines = [
    '| sessions × size | messages per run | Sterna msg/s incl. drain | Postfix msg/s incl. drain | Sterna/Postfix | Sterna msg/s to last 250 | Postfix msg/s to last 250 | Sterna drain after load (max) | Postfix drain after load (max) | machine CPU ms/msg, Sterna run | machine CPU ms/msg, Postfix run | own CPU of the servers, ms/msg, Sterna / Postfix |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const r of rows)
    lines.push(
      `| ${r.label} | ${r.messages} | ${rateCell(r.sterna)} | ${rateCell(r.postfix)} | ${ratioCell(r.sterna, r.postfix)} | ` +
        `${acceptCell(r.sterna)} | ${acceptCell(r.postfix)} | ${drainCell(r.sterna)} | ${drainCell(r.postfix)} | ` +
        `${cpuCell(r.sterna)} | ${cpuCell(r.postfix)} | ${ownCpuCell(r.sterna)} / ${ownCpuCell(r.postfix)} |`,
    );
  return lines.join('\n');
}

function header(
  machine: MachineInfo,
  group: string,
  startedAt: string,
  took: string,
  loadBefore: string,
  postfixSkipped: string | null,
): string {
  const m = machine;
  const lines = [
    `### ${group}: ${startedAt.slice(0, 16).replace('T', ' ')} UTC, \`${commandLine(group)}\`, ${took}`,
    '',
    `Machine: nproc ${m.nproc}, ${m.cpuModel}, ${mib(m.memoryBytes)} RAM, benchmark files on ${m.tmpFs}; ${m.kernel}; ` +
      `node ${m.node}; postfix ${m.postfix}; load average before this group ${loadBefore}; scale ${SCALE}; ` +
      `Sterna workers ${defaultWorkers(availableParallelism())} (its default for ${availableParallelism()} cores).`,
  ];
  if (postfixSkipped !== null) lines.push('', `Postfix skipped: ${postfixSkipped}`);
  return lines.join('\n');
}

function commandLine(group: string): string {
  const scale = SCALE === 1 ? '' : `STERNA_BENCH_SCALE=${SCALE} `;
  const repeats = REPEATS === 3 ? '' : `STERNA_BENCH_REPEATS=${REPEATS} `;
  return `${scale}${repeats}node dist/bench/run.js --only ${group}`;
}

const commandsBlock = (commands: Set<string>): string =>
  ['The load commands (PORT differs per server):', '', '```', ...commands, '```'].join('\n');

/**
 * A target line: the ratio against the bar, "met" only when every run of both servers was ok,
 * and how many times less CPU per message Sterna's own processes used.
 */
function target(what: string, r: Row | undefined, bar: number): string {
  if (r === undefined) return `${what}: not measured`;
  const v = x(r.sterna, r.postfix);
  const own = ownCpuRatio(r.sterna, r.postfix);
  return (
    `${what}: ${v === null ? 'n/a' : `${v.toFixed(2)}× (target ≥ ${bar}×, ${v >= bar ? 'met' : 'NOT met'})`}` +
    (own === null ? '' : `; own CPU per message ${own.toFixed(2)}× less than Postfix's`)
  );
}

// --- the groups -------------------------------------------------------------------------------

interface Context {
  base: string;
  withPostfix: boolean;
  /** Everything measured, for the JSON file. */
  data: Record<string, unknown>;
}

/** Runs fn with a sink and a Sterna/Postfix pair, stopping both afterwards. */
async function withPair<T>(
  ctx: Context,
  name: string,
  tls: { certFile: string; keyFile: string } | undefined,
  fn: (pair: Pair, sink: Sink) => Promise<T>,
): Promise<T> {
  const sink = await startSink();
  onCleanup(sink.stop);
  const dir = join(ctx.base, name);
  await mkdir(dir);
  try {
    const pair = await startPair({ dir, sink, withPostfix: ctx.withPostfix, tls, onCleanup });
    try {
      return await fn(pair, sink);
    } finally {
      await pair.stop();
    }
  } finally {
    sink.stop();
  }
}

/**
 * The warm-up case: 20 sessions × 1 KiB, 3,000 messages at scale 1. Node's JIT and heap take
 * thousands of messages to settle: Sterna relaying 20 × 1 KiB on one core spent 2.0–2.2 ms of
 * CPU per message over the first 3,000 measured after a 300-message warm-up, 1.5 over the next
 * 3,000, and 0.87 after a 3,000-message one (docs/benchmarks.md). Postfix gets the same load.
 */
const WARM_UP: Case = { sessions: 20, bodyBytes: KiB, messages: Math.max(20, Math.round(3000 * SCALE)) };

/** A short smtp-source run of each kind per server, not reported: JIT, process pools, caches. */
async function warmUp(pair: Pair, sink: Sink, kinds: readonly Kind[], reuse = false): Promise<void> {
  for (const kind of kinds)
    await alternate(
      `warm-up ${kind}`,
      pair,
      sink,
      kind,
      WARM_UP.messages,
      (s) => smtpSource(s, WARM_UP, kind, reuse, new Set()),
      1,
    );
}

/** The protocol-only ceiling: smtp-source straight into smtp-sink (no server, no disk). */
interface Ceiling {
  label: string;
  messages: number;
  /** Median msg/s until the sink counted every message. */
  rate: number;
  /** Median machine CPU per message, ms: smtp-source and smtp-sink alone. */
  cpuMsPerMessage: number;
}

/**
 * smtp-source into the downstream smtp-sink with the core rows' arguments, REPEATS times: what the
 * load generator and a server that does nothing cost together, and how fast they go. A server's
 * row can be at most this fast, and its own CPU per message is its row's minus this one's.
 */
async function measureCeiling(sink: Sink, c: Case, commands: Set<string>): Promise<Ceiling> {
  const rates: number[] = [];
  const cpu: number[] = [];
  for (let i = 1; i <= REPEATS; i++) {
    const before = sink.count();
    const cpuBefore = await machineBusyMs();
    const t0 = performance.now();
    const r = await runSmtpSource({
      host: SINK_HOST,
      port: sink.port,
      sessions: c.sessions,
      messages: c.messages,
      bodyBytes: c.bodyBytes,
      from: FROM,
      to: RCPT.relay,
      reuseConnections: false,
      timeoutMs: LOAD_TIMEOUT_MS,
    });
    commands.add(r.command);
    while (r.ok && sink.count() - before < c.messages && performance.now() - t0 < LOAD_TIMEOUT_MS)
      await sleep(5);
    const seconds = (performance.now() - t0) / 1000;
    const counted = sink.count() - before;
    if (!r.ok || counted !== c.messages)
      throw new Error(
        `ceiling ${caseLabel(c.sessions, c.bodyBytes)}: ${r.error || `${counted} of ${c.messages} at the sink`}`,
      );
    rates.push(c.messages / seconds);
    cpu.push(((await machineBusyMs()) - cpuBefore) / c.messages);
    progress(
      `ceiling ${caseLabel(c.sessions, c.bodyBytes)} [${i}/${REPEATS}]: ${Math.round(c.messages / seconds)} msg/s`,
    );
  }
  return {
    label: caseLabel(c.sessions, c.bodyBytes),
    messages: c.messages,
    rate: median(rates),
    cpuMsPerMessage: median(cpu),
  };
}

function ceilingTable(rows: readonly Ceiling[]): string {
  const lines = [
    '| sessions × size | messages per run | smtp-source → smtp-sink msg/s | machine CPU ms/msg |',
    '| --- | ---: | ---: | ---: |',
  ];
  for (const r of rows)
    lines.push(`| ${r.label} | ${r.messages} | ${rate(r.rate)} | ${r.cpuMsPerMessage.toFixed(2)} |`);
  return lines.join('\n');
}

async function coreGroup(ctx: Context): Promise<string> {
  const commands = new Set<string>();
  const ceiling: Ceiling[] = [];
  const rows = await withPair(ctx, 'core', undefined, async (pair, sink) => {
    // Before the warm-up: every server run checks that the sink counted nothing after the last one.
    for (const c of CORE_CASES) ceiling.push(await measureCeiling(sink, c, commands));
    await warmUp(pair, sink, KINDS);
    const out: Record<Kind, Row[]> = { relay: [], maildir: [], discard: [] };
    for (const kind of KINDS)
      for (const c of CORE_CASES)
        out[kind].push(
          await alternate(caseLabel(c.sessions, c.bodyBytes), pair, sink, kind, c.messages, (s) =>
            smtpSource(s, c, kind, false, commands),
          ),
        );
    return out;
  });
  ctx.data['core'] = { rows, ceiling };
  const lines = [
    'A new connection per message (smtp-source without `-d`), fsync before 250 on both sides; median of ' +
      `${REPEATS} runs each (lowest–highest), alternating Sterna, Postfix, Sterna…. "incl. drain": messages ` +
      'over the time from the start of the load until the work was done (queue empty, every message at ' +
      'the sink or in the Maildir, counts exact); "to last 250": until smtp-source finished.',
  ];
  for (const kind of KINDS)
    lines.push('', `**${KIND_LABEL[kind]}** (to ${RCPT[kind]}):`, '', throughputTable(rows[kind]));
  /** A case × kind table of one figure per row. */
  const glance = (cell: (s: Series, p: Series | null) => string): string[] => [
    `| sessions × size | ${KINDS.map((k) => KIND_LABEL[k]).join(' | ')} |`,
    `| --- | ${KINDS.map(() => '---:').join(' | ')} |`,
    ...CORE_CASES.map((c, i) => {
      const cells = KINDS.map((k) => {
        const r = rows[k][i];
        return r === undefined ? 'n/a' : cell(r.sterna, r.postfix);
      });
      return `| ${caseLabel(c.sessions, c.bodyBytes)} | ${cells.join(' | ')} |`;
    }),
  ];
  lines.push('', 'Sterna/Postfix at a glance (msg/s incl. drain):', '', ...glance(ratioCell));
  lines.push(
    '',
    "Postfix's own CPU per message over Sterna's (the servers' processes only, without the load " +
      'generator and the sink: how far apart they would be with those on another machine):',
    '',
    ...glance(ownCpuRatioCell),
  );
  const find = (kind: Kind, sessions: number, size: number): Row | undefined =>
    rows[kind][CORE_CASES.findIndex((c) => c.sessions === sessions && c.bodyBytes === size)];
  lines.push(
    '',
    `- ${target('20 × 1 KiB relay', find('relay', 20, KiB), 2.5)}`,
    `- ${target('20 × 1 KiB Maildir', find('maildir', 20, KiB), 2.5)}`,
    `- ${target('1 × 1 KiB relay', find('relay', 1, KiB), 1.5)}`,
    `- ${target('1 × 1 KiB Maildir', find('maildir', 1, KiB), 1.5)}`,
    `- ${target('20 × 100 KiB relay', find('relay', 20, 100 * KiB), 2.5)}`,
    `- ${target('20 × 100 KiB Maildir', find('maildir', 20, 100 * KiB), 2.5)}`,
    '',
    'The protocol-only ceiling: smtp-source straight into smtp-sink, the same arguments, no server and ' +
      'no disk. "machine CPU ms/msg" (here and above) is the CPU the whole machine spent per message ' +
      '(/proc/stat, from the start of the load until the work was done): the server, smtp-source and ' +
      'smtp-sink together. With every core busy, a row runs at about (cores × 1000) / that figure msg/s, ' +
      "so a server's cost is roughly its row's figure minus the ceiling's. \"own CPU of the servers\" is " +
      "measured directly: the CPU time of the server's processes (Sterna's process and its workers; " +
      "Postfix's master and every process under it, exited ones included) over the same span.",
    '',
    ceilingTable(ceiling),
    '',
    commandsBlock(commands),
  );
  return lines.join('\n');
}

async function persistentGroup(ctx: Context): Promise<string> {
  const commands = new Set<string>();
  const rows = await withPair(ctx, 'persistent', undefined, async (pair, sink) => {
    await warmUp(pair, sink, ['discard'], true);
    const out: Row[] = [];
    for (const c of PERSISTENT_CASES)
      out.push(
        await alternate(caseLabel(c.sessions, c.bodyBytes), pair, sink, 'discard', c.messages, (s) =>
          smtpSource(s, c, 'discard', true, commands),
        ),
      );
    return out;
  });
  ctx.data['persistent'] = rows;
  return [
    'Each session on ONE connection for all its messages (smtp-source `-d`), discard, fsync before 250; ' +
      `median of ${REPEATS} runs (lowest–highest). Real traffic rarely looks like this: see the core tables.`,
    '',
    throughputTable(rows),
    '',
    commandsBlock(commands),
  ].join('\n');
}

async function latencyGroup(ctx: Context): Promise<string> {
  const commands = new Set<string>();
  const c = LATENCY_CASE;
  const rows = await withPair(ctx, 'latency', undefined, async (pair, sink) => {
    await warmUp(pair, sink, [LATENCY_KIND]);
    // smtp-source and connect-load alternate too: S source, P source, S load, P load, …
    const source: Run[][] = [[], []];
    const load: Run[][] = [[], []];
    const servers = [pair.sterna, pair.postfix];
    for (let i = 1; i <= REPEATS; i++) {
      for (const [tool, runs] of [
        ['smtp-source', source],
        ['connect-load', load],
      ] as const) {
        for (const [j, server] of servers.entries()) {
          if (server === null) continue;
          const fn =
            tool === 'smtp-source'
              ? smtpSource(server, c, LATENCY_KIND, false, commands)
              : connectLoad(server, c, LATENCY_KIND, 'none', commands);
          const r = await measureRun(server, sink, LATENCY_KIND, c.messages, fn);
          progress(
            `latency ${tool} [${i}/${REPEATS}] ${server.name}: ${r.ok ? `${Math.round(c.messages / r.doneSeconds)} msg/s` : `FAILED: ${r.error}`}`,
          );
          runs[j]?.push(r);
        }
      }
    }
    const row = (label: string, runs: Run[][]): Row => ({
      label,
      messages: c.messages,
      sterna: series(runs[0] ?? []),
      postfix: pair.postfix === null ? null : series(runs[1] ?? []),
    });
    return [row('smtp-source (HELO)', source), row('connect-load (EHLO)', load)];
  });
  ctx.data['latency'] = rows;
  const lines = [
    `${caseLabel(c.sessions, c.bodyBytes)} into Maildir (${RCPT[LATENCY_KIND]}), a new connection per message, ` +
      `${c.messages} messages per run, median of ${REPEATS} runs; latency = connect() to the 250 after the dot, ` +
      `measured by bench/connect-load.ts (${LOAD_PROCESSES} processes). smtp-source on the same row checks the generator's rate.`,
    '',
    '| load tool | Sterna msg/s incl. drain | Postfix msg/s incl. drain | Sterna/Postfix | Sterna p50 / p99 ms | Postfix p50 / p99 ms |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const r of rows)
    lines.push(
      `| ${r.label} | ${rateCell(r.sterna)} | ${rateCell(r.postfix)} | ${ratioCell(r.sterna, r.postfix)} | ` +
        `${latencyCell(r.sterna)} | ${latencyCell(r.postfix)} |`,
    );
  lines.push('', commandsBlock(commands));
  return lines.join('\n');
}

interface TlsRow extends Row {
  key: KeyKind;
  mode: TlsMode;
}

const resumedCell = (m: Series | null): string => {
  if (m === null) return 'n/a';
  const h = m.runs.reduce((n, r) => n + (r.load.handshakes ?? 0), 0);
  const s = m.runs.reduce((n, r) => n + (r.load.resumed ?? 0), 0);
  return h === 0 ? 'n/a' : `${((100 * s) / h).toFixed(0)} %`;
};

/** The server keys the generator saw in a row, both servers (a check that each served the row's certificate). */
const servedKeys = (r: Row): string =>
  [...new Set([...r.sterna.runs, ...(r.postfix?.runs ?? [])].map((x) => x.load.serverKey ?? '?'))].join(', ');

/** STARTTLS rows into Maildir for each key, in `modes`, with a warm-up per key (not reported). */
async function measureTls(
  ctx: Context,
  name: string,
  modes: readonly TlsMode[],
  commands: Set<string>,
): Promise<TlsRow[]> {
  const c = TLS_CASE;
  const certDir = join(ctx.base, `${name}-certs`);
  await mkdir(certDir);
  const rows: TlsRow[] = [];
  for (const key of ['rsa2048', 'ecdsa-p256'] as const) {
    const cert = await makeCert(certDir, key);
    await withPair(ctx, `${name}-${key}`, cert, async (pair, sink) => {
      // A whole run's worth, not reported: the TLS path warms up as the plain one does (WARM_UP).
      await alternate(
        `warm-up TLS ${key}`,
        pair,
        sink,
        TLS_KIND,
        c.messages,
        (s) => connectLoad(s, c, TLS_KIND, 'full', new Set()),
        1,
      );
      for (const mode of modes) {
        const row = await alternate(
          `STARTTLS ${KEY_LABEL[key]} ${mode}`,
          pair,
          sink,
          TLS_KIND,
          c.messages,
          (s) => connectLoad(s, c, TLS_KIND, mode, commands),
        );
        rows.push({ ...row, key, mode });
      }
    });
  }
  return rows;
}

function tlsTable(rows: readonly TlsRow[]): string[] {
  const lines = [
    '| certificate | handshake | Sterna msg/s incl. drain | Postfix msg/s incl. drain | Sterna/Postfix | Sterna p50 / p99 ms | Postfix p50 / p99 ms | resumed Sterna / Postfix | machine CPU ms/msg Sterna / Postfix | own CPU of the servers, ms/msg, Sterna / Postfix |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const r of rows)
    lines.push(
      `| ${KEY_LABEL[r.key]} (served: ${servedKeys(r)}) | ${r.mode === 'full' ? 'full' : 'resumed'} | ${rateCell(r.sterna)} | ${rateCell(r.postfix)} | ` +
        `${ratioCell(r.sterna, r.postfix)} | ${latencyCell(r.sterna)} | ${latencyCell(r.postfix)} | ` +
        `${resumedCell(r.sterna)} / ${resumedCell(r.postfix)} | ${cpuCell(r.sterna)} / ${cpuCell(r.postfix)} | ` +
        `${ownCpuCell(r.sterna)} / ${ownCpuCell(r.postfix)} |`,
    );
  return lines;
}

const tlsRow = (rows: readonly TlsRow[], key: KeyKind, mode: TlsMode): TlsRow | undefined =>
  rows.find((r) => r.key === key && r.mode === mode);

/** The target lines of the full-handshake STARTTLS rows. */
const tlsTargets = (rows: readonly TlsRow[], prefix = ''): string[] => [
  `- ${target(`${prefix}STARTTLS RSA-2048 full handshakes`, tlsRow(rows, 'rsa2048', 'full'), 2)}`,
  `- ${target(`${prefix}STARTTLS ECDSA P-256 full handshakes`, tlsRow(rows, 'ecdsa-p256', 'full'), 2)}`,
];

/** The STARTTLS floor of one certificate: connect-load into bench/tls-floor.ts (no server work). */
interface TlsFloorRow {
  key: KeyKind;
  /** msg/s of each run. */
  rates: number[];
  /** Median machine CPU per message, ms: the generator and the responder. */
  machineMs: number;
  /** Median CPU per message of the responder's process, ms. */
  ownMs: number;
}

/**
 * The full-handshake STARTTLS row against a bare Node responder that keeps nothing
 * (bench/tls-floor.ts), REPEATS runs after a warm-up: what any Node server reaches at best on
 * this machine with this generator, as smtp-sink is the floor of the plain rows.
 */
async function measureTlsFloor(ctx: Context, key: KeyKind, commands: Set<string>): Promise<TlsFloorRow> {
  const c = TLS_CASE;
  const certDir = join(ctx.base, `tls-floor-${key}`);
  await mkdir(certDir);
  const floor = await startTlsFloor(await makeCert(certDir, key), defaultWorkers(availableParallelism()));
  try {
    const options = {
      sessions: c.sessions,
      messages: c.messages,
      bodyBytes: c.bodyBytes,
      from: FROM,
      to: RCPT[TLS_KIND],
      tls: 'full' as const,
      timeoutMs: LOAD_TIMEOUT_MS,
    };
    commands.add(connectLoadCommand(options, Math.min(LOAD_PROCESSES, c.sessions)));
    const rates: number[] = [];
    const machine: number[] = [];
    const own: number[] = [];
    for (let i = 0; i <= REPEATS; i++) {
      const cpuBefore = await machineBusyMs();
      const ownBefore = await processTreeCpuMs(floor.pid);
      const r = await runConnectLoadProcesses(
        { host: '127.0.0.1', port: floor.port, ...options },
        LOAD_PROCESSES,
      );
      if (r.failed !== 0 || r.accepted !== c.messages)
        throw new Error(
          `TLS floor ${KEY_LABEL[key]}: ${r.firstError || `${r.accepted} of ${c.messages} accepted`}`,
        );
      if (i === 0) continue; // the warm-up
      rates.push(r.accepted / r.seconds);
      machine.push(((await machineBusyMs()) - cpuBefore) / c.messages);
      own.push(((await processTreeCpuMs(floor.pid)) - ownBefore) / c.messages);
      progress(`TLS floor ${KEY_LABEL[key]} [${i}/${REPEATS}]: ${Math.round(r.accepted / r.seconds)} msg/s`);
    }
    return { key, rates, machineMs: median(machine), ownMs: median(own) };
  } finally {
    await floor.stop();
  }
}

function tlsFloorTable(floors: readonly TlsFloorRow[], rows: readonly TlsRow[]): string[] {
  const lines = [
    "| certificate | floor msg/s | floor/Postfix | Sterna/floor | machine CPU ms/msg | the responder's own CPU ms/msg |",
    '| --- | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const f of floors) {
    const full = tlsRow(rows, f.key, 'full');
    const m = median(f.rates);
    const over = (a: number, b: number | undefined): string =>
      b === undefined || b === 0 ? 'n/a' : `${(a / b).toFixed(2)}×`;
    lines.push(
      `| ${KEY_LABEL[f.key]} | ${rate(m)} (${rate(Math.min(...f.rates))}–${rate(Math.max(...f.rates))}) | ` +
        `${over(m, full?.postfix?.median)} | ${full === undefined ? 'n/a' : over(full.sterna.median, m)} | ` +
        `${f.machineMs.toFixed(2)} | ${f.ownMs.toFixed(2)} |`,
    );
  }
  return lines;
}

async function tlsGroup(ctx: Context): Promise<string> {
  const commands = new Set<string>();
  const c = TLS_CASE;
  const rows = await measureTls(ctx, 'tls', ['full', 'resume'], commands);
  ctx.data['tls'] = rows;
  const first = rows.flatMap((r) => r.sterna.runs).find((r) => r.load.tlsVersion)?.load;
  const lines = [
    `STARTTLS on every message: ${caseLabel(c.sessions, c.bodyBytes)} into Maildir (${RCPT[TLS_KIND]}), ` +
      `${c.messages} messages per run, each on a new connection (EHLO, STARTTLS, EHLO, MAIL, RCPT, DATA), ` +
      `bench/connect-load.ts with ${LOAD_PROCESSES} processes; median of ${REPEATS} runs. "full": a full ` +
      'handshake every time; "resumed": each session offers the TLS session (ticket) of its previous ' +
      'connection. Sterna: `[tls] cert_file/key_file`; Postfix: `smtpd_tls_cert_file/key_file`, ' +
      '`smtpd_tls_security_level = may`, tlsmgr(8), every other TLS setting at its default. ' +
      `Negotiated: ${first?.tlsVersion ?? '?'} ${first?.cipher ?? ''}.`,
    '',
    ...tlsTable(rows),
  ];
  const rsa = tlsRow(rows, 'rsa2048', 'full');
  const ec = tlsRow(rows, 'ecdsa-p256', 'full');
  if (rsa !== undefined && ec !== undefined) {
    const gain = (a: Series | null, b: Series | null): string =>
      a === null || b === null || b.median === 0 ? 'n/a' : `${(a.median / b.median).toFixed(2)}×`;
    lines.push(
      '',
      `ECDSA P-256 over RSA-2048, full handshakes: Sterna ${gain(ec.sterna, rsa.sterna)}, Postfix ${gain(ec.postfix, rsa.postfix)} the rate.`,
    );
  }
  const floors: TlsFloorRow[] = [];
  for (const key of ['rsa2048', 'ecdsa-p256'] as const)
    floors.push(await measureTlsFloor(ctx, key, commands));
  ctx.data['tlsFloor'] = floors;
  lines.push(
    '',
    'The floor: the same full-handshake load into bench/tls-floor.ts, a bare SMTP responder in Node that ' +
      "speaks only what the generator needs over Node's TLS and keeps nothing (no spool, fsync, " +
      `logging or checks), in ${defaultWorkers(availableParallelism())} process(es) like Sterna's workers; ` +
      `median of ${REPEATS} runs after a warm-up. "floor/Postfix" is about the most a Node server could ` +
      'reach on this row with this generator on these cores; "Sterna/floor" is how close Sterna comes.',
    '',
    ...tlsFloorTable(floors, rows),
  );
  lines.push('', ...tlsTargets(rows), '', commandsBlock(commands));
  return lines.join('\n');
}

/** The core group's rows that miss their target on 2 shared cores: 20 sessions. */
const PINNED_CASES: readonly Case[] = CORE_CASES.filter((c) => c.sessions === 20);

/** `first`-`last` as a taskset CPU list. */
const cpuList = (first: number, last: number): string => (first === last ? `${first}` : `${first}-${last}`);

/**
 * The 20-session rows and the full STARTTLS handshakes again, with the server under test on
 * half the cores and the load generator and the sink on the other half (taskset): neither takes
 * CPU time from the other, as when the generator runs on another machine. Each server gets the
 * same cores; Sterna's default worker count follows the cores it may use.
 */
async function pinnedGroup(ctx: Context): Promise<string> {
  const cores = availableParallelism();
  if (cores < 2) return 'Skipped: pinning needs at least 2 cores.';
  const serverCores = Math.floor(cores / 2);
  const pinning: Pinning = { server: cpuList(0, serverCores - 1), load: cpuList(serverCores, cores - 1) };
  setPinning(pinning);
  const commands = new Set<string>();
  try {
    const rows = await withPair(ctx, 'pinned', undefined, async (pair, sink) => {
      await warmUp(pair, sink, KINDS);
      const out: Record<Kind, Row[]> = { relay: [], maildir: [], discard: [] };
      for (const kind of KINDS)
        for (const c of PINNED_CASES)
          out[kind].push(
            await alternate(
              `pinned ${caseLabel(c.sessions, c.bodyBytes)}`,
              pair,
              sink,
              kind,
              c.messages,
              (s) => smtpSource(s, c, kind, false, commands),
            ),
          );
      return out;
    });
    const tls = await measureTls(ctx, 'pinned-tls', ['full'], commands);
    ctx.data['pinned'] = { pinning, rows, tls };
    const lines = [
      `The server under test (Sterna, or Postfix's master and every process it starts) on core(s) ` +
        `${pinning.server}; smtp-source, connect-load and smtp-sink on core(s) ${pinning.load} (taskset -c). ` +
        `Sterna runs ${defaultWorkers(serverCores)} worker(s), its default for ${serverCores} core(s). ` +
        'Otherwise as the core and tls groups: a new connection per message, fsync before 250 on both sides, ' +
        `median of ${REPEATS} runs each (lowest–highest), alternating.`,
    ];
    for (const kind of KINDS)
      lines.push('', `**${KIND_LABEL[kind]}** (to ${RCPT[kind]}), pinned:`, '', throughputTable(rows[kind]));
    lines.push('', '**STARTTLS, full handshakes**, pinned:', '', ...tlsTable(tls));
    const find = (kind: Kind, size: number): Row | undefined =>
      rows[kind][PINNED_CASES.findIndex((c) => c.bodyBytes === size)];
    lines.push(
      '',
      `- ${target('pinned 20 × 1 KiB relay', find('relay', KiB), 2.5)}`,
      `- ${target('pinned 20 × 1 KiB Maildir', find('maildir', KiB), 2.5)}`,
      `- ${target('pinned 20 × 100 KiB relay', find('relay', 100 * KiB), 2.5)}`,
      `- ${target('pinned 20 × 100 KiB Maildir', find('maildir', 100 * KiB), 2.5)}`,
      ...tlsTargets(tls, 'pinned '),
      '',
      commandsBlock(commands),
    );
    return lines.join('\n');
  } finally {
    setPinning(null);
  }
}

async function outboundGroup(ctx: Context): Promise<string> {
  await mkdir(join(ctx.base, 'outbound'));
  const out = await runOutbound({
    dir: join(ctx.base, 'outbound'),
    cases: OUTBOUND_CASES,
    repeats: REPEATS,
    warmUpMessages: WARM_UP.messages,
    withPostfix: ctx.withPostfix,
    onCleanup,
    progress,
  });
  ctx.data['outbound'] = out;
  return outboundSummary(out);
}

/** The idle group opens IDLE_CONNECTIONS sockets from this process: checked before any group runs. */
async function checkFdLimit(): Promise<void> {
  const r = await run('bash', ['-c', 'ulimit -n']);
  const limit = Number(r.stdout.trim());
  if (Number.isFinite(limit) && limit < IDLE_CONNECTIONS + 500)
    throw new Error(
      `the descriptor limit is ${limit}; the idle test opens ${IDLE_CONNECTIONS} connections from this process. ` +
        `Run "ulimit -n 20000" first.`,
    );
}

async function idleGroup(ctx: Context): Promise<string> {
  const dir = join(ctx.base, 'sterna-idle');
  await mkdir(dir);
  const sterna = await startSterna({ dir });
  onCleanup(sterna.kill);
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
      const each = (after - before) / IDLE_CONNECTIONS;
      ctx.data['idle'] = { connections: IDLE_CONNECTIONS, rssBeforeBytes: before, rssAfterBytes: after };
      return (
        `Sterna VmRSS ${mib(before)} before, ${mib(after)} with ${IDLE_CONNECTIONS} idle connections, each greeted ` +
        `(${(each / KiB).toFixed(1)} KiB each; target ≤ 8 KiB: ${each <= 8 * KiB ? 'met' : 'NOT met'}).`
      );
    } finally {
      idle.close();
    }
  } finally {
    await sterna.stop();
  }
}

/**
 * The groups in the order of a full run. Another group is one more entry here (its function
 * returns the markdown to print).
 */
const GROUPS: Readonly<Record<string, (ctx: Context) => Promise<string>>> = {
  core: coreGroup,
  tls: tlsGroup,
  latency: latencyGroup,
  persistent: persistentGroup,
  outbound: outboundGroup,
  idle: idleGroup,
  pinned: pinnedGroup,
};

// --- main -------------------------------------------------------------------------------------

/** The 1, 5 and 15 minute load averages. */
async function loadAverage(): Promise<string> {
  return (await run('cat', ['/proc/loadavg'])).stdout.split(' ').slice(0, 3).join(' ');
}

async function writeResults(startedAt: string, data: unknown): Promise<void> {
  await mkdir(RESULTS_DIR, { recursive: true });
  const file = join(RESULTS_DIR, `bench-${startedAt.replace(/[:.]/g, '-')}.json`);
  await writeFile(file, `${JSON.stringify(data, null, 2)}\n`);
  progress(`results written to ${file}`);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  // bench/security.ts, the cost of the abuse and mail authentication checks: its own run, not in the full one.
  if (args[0] === '--only' && args[1] === 'security') return runSecurityBench();
  if (!Number.isInteger(REPEATS) || REPEATS < 1)
    throw new Error(
      `STERNA_BENCH_REPEATS must be a whole number of runs, 1 or more; got "${process.env['STERNA_BENCH_REPEATS']}"`,
    );
  const only = args[0] === '--only' ? (args[1] ?? '').split(',') : Object.keys(GROUPS);
  for (const g of only)
    if (!(g in GROUPS))
      throw new Error(`--only: unknown group "${g}"; expected one of ${Object.keys(GROUPS).join(', ')}`);
  if (only.includes('idle')) await checkFdLimit();
  // STERNA_BENCH_DIR: where both servers keep their spools, queues and Maildirs (default: the
  // temp directory), e.g. on the file system a mail server would use.
  const base = await mkdtemp(join(process.env['STERNA_BENCH_DIR'] ?? tmpdir(), 'sterna-bench-'));
  // Postfix's daemons run as the postfix user and must be able to reach their directories.
  await chmod(base, 0o755);
  const machine = await describeMachine(base);
  const startedAt = new Date().toISOString();
  progress(`working directory ${base}; load average ${machine.loadBefore}; groups ${only.join(', ')}`);
  const postfixSkipped = await postfixAvailable();
  if (postfixSkipped !== null) progress(postfixSkipped);
  const ctx: Context = { base, withPostfix: postfixSkipped === null, data: {} };
  const out: string[] = [];
  const t0 = performance.now();
  try {
    for (const g of only) {
      const fn = GROUPS[g];
      if (fn === undefined) continue;
      const tg = performance.now();
      const groupStart = new Date().toISOString();
      const loadBefore = await loadAverage();
      progress(`group ${g}`);
      const text = await fn(ctx);
      const took = `${((performance.now() - tg) / 60_000).toFixed(1)} min`;
      const block = `${header(machine, g, groupStart, took, loadBefore, postfixSkipped)}\n\n${text}\n`;
      out.push(block);
      process.stdout.write(`${block}\n`);
    }
  } finally {
    const loadAfter = await loadAverage();
    await writeResults(startedAt, {
      startedAt,
      scale: SCALE,
      machine,
      loadAfter,
      postfixSkipped,
      ...ctx.data,
    });
    progress(
      `done in ${((performance.now() - t0) / 60_000).toFixed(1)} min; load average after ${loadAfter}`,
    );
  }
  await rm(base, { recursive: true, force: true });
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
