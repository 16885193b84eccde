/**
 * The outbound benchmark (issue 4): messages per second from the spool to a local sink, Postfix's
 * smtp-sink(1) on 127.0.0.2, for Sterna (a relay entry in `transport`, TLS off) and for a private
 * Postfix (relayhost), measured the same way for both. smtp-source(1) sends N messages over 20
 * sessions; the delivery rate is N over the time from the start of smtp-source until the sink
 * has counted all N, so it is bounded by the slower of acceptance and delivery (the acceptance
 * rate is reported too). Runs alternate between the servers; the tables give the median.
 * Benchmark code: trusted, loopback only; every process it starts is stopped on exit.
 */
import { spawn } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort, sleep } from './machine.js';
import { startPostfix, type PostfixInstance } from './postfix.js';
import { runSmtpSource } from './smtp-source.js';
import { startSterna, type SternaInstance } from './sterna.js';

const KiB = 1024;
const SINK_HOST = '127.0.0.2';
const SINK_DOMAIN = 'sink.test';
const FROM = 'sender@source.bench.local';
const TO = `rcpt@${SINK_DOMAIN}`;
const SESSIONS = 20;
const DELIVERY_TIMEOUT_MS = 60_000;

export interface OutboundCase {
  bodyBytes: number;
  messages: number;
}

export interface OutboundRun {
  /** Messages the sink counted for this run. */
  delivered: number;
  /** Seconds smtp-source took (acceptance). */
  acceptSeconds: number;
  /** Seconds from the start of smtp-source until the sink had counted every message. */
  deliverSeconds: number;
  ok: boolean;
  error: string;
}

export interface OutboundSeries {
  runs: OutboundRun[];
  /** Median delivered messages/s (0 for a failed run). */
  deliveredPerSecond: number;
  /** Median accepted messages/s. */
  acceptedPerSecond: number;
  allOk: boolean;
}

export interface OutboundRow {
  case: OutboundCase;
  sterna: OutboundSeries;
  postfix: OutboundSeries | null;
}

export interface OutboundReport {
  sessions: number;
  rows: OutboundRow[];
  command: string;
}

/** smtp-sink(1) on SINK_HOST:port, counting the messages it received (its -c counter). */
interface Sink {
  port: number;
  count: () => number;
  stop: () => void;
}

async function startSink(): Promise<Sink> {
  const port = await freePort();
  // -c: running counter on stdout ("sess=… quit=… mesg=N\r"); -u: the user to run as (it refuses root).
  const child = spawn('/usr/sbin/smtp-sink', ['-c', '-u', 'postfix', `${SINK_HOST}:${port}`, '1000'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let count = 0;
  let tail = '';
  let stderr = '';
  child.stdout.setEncoding('latin1').on('data', (d: string) => {
    tail = (tail + d).slice(-200);
    const all = [...tail.matchAll(/mesg=(\d+)/g)];
    const last = all.at(-1);
    if (last?.[1] !== undefined) count = Number(last[1]);
  });
  child.stderr.setEncoding('latin1').on('data', (d: string) => (stderr = (stderr + d).slice(-500)));
  const stop = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  await sleep(300);
  if (child.exitCode !== null) throw new Error(`smtp-sink exited: ${stderr.trim()}`);
  return { port, count: () => count, stop };
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)] ?? 0;
}

/** One run: smtp-source into the server, then wait until the sink counted every message. */
async function oneRun(c: OutboundCase, port: number, sink: Sink): Promise<OutboundRun> {
  const before = sink.count();
  const t0 = performance.now();
  const r = await runSmtpSource({
    port,
    sessions: SESSIONS,
    messages: c.messages,
    bodyBytes: c.bodyBytes,
    from: FROM,
    to: TO,
    reuseConnections: true,
    timeoutMs: DELIVERY_TIMEOUT_MS,
  });
  const acceptSeconds = r.seconds;
  while (sink.count() - before < c.messages && performance.now() - t0 < DELIVERY_TIMEOUT_MS) await sleep(10);
  const deliverSeconds = (performance.now() - t0) / 1000;
  const delivered = sink.count() - before;
  const ok = r.ok && delivered >= c.messages;
  return {
    delivered,
    acceptSeconds,
    deliverSeconds,
    ok,
    error: r.ok ? (ok ? '' : `sink counted ${delivered} of ${c.messages}`) : r.error,
  };
}

function series(runs: OutboundRun[], c: OutboundCase): OutboundSeries {
  return {
    runs,
    deliveredPerSecond: median(runs.map((r) => (r.ok ? c.messages / r.deliverSeconds : 0))),
    acceptedPerSecond: median(runs.map((r) => (r.ok ? c.messages / r.acceptSeconds : 0))),
    allOk: runs.every((r) => r.ok),
  };
}

/** Waits until the server's queue is empty (between runs), up to the delivery timeout. */
async function waitEmpty(count: () => Promise<number> | number): Promise<void> {
  const t0 = performance.now();
  while ((await count()) > 0 && performance.now() - t0 < DELIVERY_TIMEOUT_MS) await sleep(50);
}

export interface OutboundOptions {
  /** Working directory (exists, mode 0755 for Postfix). */
  dir: string;
  cases: readonly OutboundCase[];
  repeats: number;
  withPostfix: boolean;
  /** Registers a synchronous last-resort stop for process exit. */
  onCleanup: (stop: () => void) => void;
  progress: (text: string) => void;
}

export async function runOutbound(o: OutboundOptions): Promise<OutboundReport> {
  const sink = await startSink();
  o.onCleanup(sink.stop);
  const relay = `[${SINK_HOST}]:${sink.port}`;
  let sterna: SternaInstance | null = null;
  let postfix: PostfixInstance | null = null;
  try {
    await mkdir(join(o.dir, 'sterna-outbound'));
    sterna = await startSterna({
      dir: join(o.dir, 'sterna-outbound'),
      transportEntries: `"${SINK_DOMAIN}" = { relay = "${relay}", tls = "none" }`,
      extraConfig: `
[relay]
trusted_networks = ["127.0.0.1/32"]

[queue]
first_retry_ms = 1000
`,
    });
    o.onCleanup(sterna.kill);
    if (o.withPostfix) {
      await mkdir(join(o.dir, 'postfix-outbound'));
      postfix = await startPostfix(join(o.dir, 'postfix-outbound'), relay);
      o.onCleanup(postfix.stopSync);
    }
    // Warm-up, not reported.
    const warm: OutboundCase = { bodyBytes: KiB, messages: 200 };
    o.progress('outbound warm-up');
    await oneRun(warm, sterna.port, sink);
    if (postfix !== null) await oneRun(warm, postfix.port, sink);

    const rows: OutboundRow[] = [];
    for (const c of o.cases) {
      const s: OutboundRun[] = [];
      const p: OutboundRun[] = [];
      for (let i = 1; i <= o.repeats; i++) {
        const what = `outbound ${SESSIONS} × ${c.bodyBytes / KiB} KiB, ${c.messages} messages [${i}/${o.repeats}]`;
        o.progress(`${what}: Sterna`);
        await waitEmpty(sterna.liveMessages);
        s.push(await oneRun(c, sterna.port, sink));
        if (postfix !== null) {
          o.progress(`${what}: Postfix`);
          await waitEmpty(postfix.queuedMessages);
          p.push(await oneRun(c, postfix.port, sink));
        }
      }
      rows.push({ case: c, sterna: series(s, c), postfix: postfix === null ? null : series(p, c) });
    }
    return {
      sessions: SESSIONS,
      rows,
      command: `smtp-sink -c -u postfix ${SINK_HOST}:PORT 1000; smtp-source -d -s ${SESSIONS} -m N -l SIZE -t ${TO} 127.0.0.1:PORT`,
    };
  } finally {
    await sterna?.stop();
    await postfix?.stop().catch(() => undefined);
    sink.stop();
  }
}

const rate = (n: number): string => Math.round(n).toLocaleString('en-US');

function cell(s: OutboundSeries | null, field: 'deliveredPerSecond' | 'acceptedPerSecond'): string {
  if (s === null) return 'n/a';
  if (!s.allOk) return `FAILED: ${s.runs.find((r) => !r.ok)?.error ?? ''}`;
  return rate(s[field]);
}

/** The markdown table and the verdict on the 2× target. */
export function outboundSummary(report: OutboundReport): string {
  const lines = [
    `Outbound: spool to smtp-sink on ${SINK_HOST}, smtp-source with ${report.sessions} sessions (median of runs):`,
    '',
    '| size | messages per run | Sterna delivered msg/s | Postfix delivered msg/s | Sterna/Postfix | Sterna accepted msg/s | Postfix accepted msg/s |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  const verdicts: string[] = [];
  for (const r of report.rows) {
    const x =
      r.postfix === null || r.postfix.deliveredPerSecond === 0
        ? null
        : r.sterna.deliveredPerSecond / r.postfix.deliveredPerSecond;
    lines.push(
      `| ${r.case.bodyBytes / KiB} KiB | ${r.case.messages} | ${cell(r.sterna, 'deliveredPerSecond')} | ` +
        `${cell(r.postfix, 'deliveredPerSecond')} | ${x === null ? 'n/a' : `${x.toFixed(2)}×`} | ` +
        `${cell(r.sterna, 'acceptedPerSecond')} | ${cell(r.postfix, 'acceptedPerSecond')} |`,
    );
    if (x !== null)
      verdicts.push(
        `${r.case.bodyBytes / KiB} KiB ${x.toFixed(2)}× (${x >= 2 && r.sterna.allOk ? 'met' : 'NOT met'})`,
      );
  }
  if (verdicts.length > 0) lines.push('', `Target (outbound, Sterna ≥ 2 × Postfix): ${verdicts.join(', ')}`);
  return lines.join('\n');
}
