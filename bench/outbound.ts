/**
 * The outbound benchmark (issue 4): messages per second from the spool to a local sink, Postfix's
 * smtp-sink(1) on 127.0.0.2, for Sterna (a relay entry in `transport`, TLS off) and for a private
 * Postfix (relayhost), measured the same way for both. smtp-source(1) sends N messages over 20
 * sessions; the delivery rate is N over the time from the start of smtp-source until the sink
 * has counted all N, so it is bounded by the slower of acceptance and delivery (the acceptance
 * rate is reported too). Runs alternate between the servers; the tables give the median.
 * Then the queue drain: the same N messages are first queued while they cannot be delivered
 * (Sterna: its relay for the sink domain points at a port where nothing listens, retries an hour
 * away; Postfix: defer_transports = smtp), then released at once (Sterna: restarted with the
 * relay pointing at the sink, then a flush on its control socket; Postfix: defer_transports
 * cleared, reload, postqueue -f); the rate is N over the time from the release until the sink
 * has counted all N. Filling is not timed. Between the restart (or reload) and the release,
 * each server first delivers a warm-up of new messages to the same sink, not timed: a server
 * whose destination comes back has been running, and a Node process that has just started runs
 * its delivery code unoptimised for its first thousands of messages (bench/run.ts, WARM_UP).
 * Benchmark code: trusted, loopback only; every process it starts is stopped on exit.
 */
import { spawn } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort, pinned, sleep } from './machine.js';
import { startPostfix, type PostfixInstance } from './postfix.js';
import { runSmtpSource } from './smtp-source.js';
import { startSterna, type SternaInstance, type SternaOptions } from './sterna.js';

const KiB = 1024;
export const SINK_HOST = '127.0.0.2';
const SINK_DOMAIN = 'sink.test';
const FROM = 'sender@source.bench.local';
const TO = `rcpt@${SINK_DOMAIN}`;
const SESSIONS = 20;
const DELIVERY_TIMEOUT_MS = 60_000;
/** Bound on each step of a drain run (filling, waiting for the queue to settle, draining). */
const DRAIN_STEP_TIMEOUT_MS = 120_000;
/** Retry delay and back-off ceiling of Sterna's drain instance: nothing is retried during a run. */
const DRAIN_RETRY_MS = 3_600_000;
/** Pause after the restart or reload, before the release, to check nothing is delivered early. */
const SETTLE_MS = 1000;

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

/** One queue-drain run: N messages queued, undeliverable, then released at once. */
export interface DrainRun {
  /** Messages in the queue, all deferred, just before the release. */
  queuedBeforeRelease: number;
  /** Seconds the fill took (smtp-source until every message was deferred); not part of the rate. */
  fillSeconds: number;
  /** Messages the sink counted after the release. */
  delivered: number;
  /** Seconds from the release until the sink had counted every message. */
  drainSeconds: number;
  /** Messages still queued once the drain ended (0 expected). */
  queuedAfter: number;
  ok: boolean;
  error: string;
}

export interface DrainSeries {
  runs: DrainRun[];
  /** Median, lowest and highest messages/s over the runs (0 for a failed run). */
  perSecond: number;
  min: number;
  max: number;
  allOk: boolean;
}

export interface DrainRow {
  case: OutboundCase;
  sterna: DrainSeries;
  postfix: DrainSeries | null;
}

export interface OutboundReport {
  sessions: number;
  rows: OutboundRow[];
  command: string;
  /** The queue drain, same cases and sink. */
  drain: DrainRow[];
  drainMethod: string;
}

/** smtp-sink(1) on SINK_HOST:port, counting the messages it received (its -c counter). */
export interface Sink {
  port: number;
  count: () => number;
  stop: () => void;
}

export async function startSink(): Promise<Sink> {
  const port = await freePort();
  // -c: running counter on stdout ("sess=… quit=… mesg=N\r"); -u: the user to run as (it refuses root).
  const child = spawn(
    ...pinned('load', '/usr/sbin/smtp-sink', ['-c', '-u', 'postfix', `${SINK_HOST}:${port}`, '1000']),
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
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

/** Polls `check` every `everyMs` until it returns true; false after `timeoutMs`. */
async function waitFor(
  check: () => Promise<boolean> | boolean,
  timeoutMs: number,
  everyMs = 50,
): Promise<boolean> {
  const t0 = performance.now();
  for (;;) {
    if (await check()) return true;
    if (performance.now() - t0 > timeoutMs) return false;
    await sleep(everyMs);
  }
}

/** Waits until the sink counted `n` more than `before`; the seconds since `t0`. */
async function waitSink(sink: Sink, before: number, n: number, t0: number): Promise<number> {
  await waitFor(() => sink.count() - before >= n, DRAIN_STEP_TIMEOUT_MS, 5);
  return (performance.now() - t0) / 1000;
}

function fillSource(c: OutboundCase, port: number): ReturnType<typeof runSmtpSource> {
  return runSmtpSource({
    port,
    sessions: SESSIONS,
    messages: c.messages,
    bodyBytes: c.bodyBytes,
    from: FROM,
    to: TO,
    reuseConnections: true,
    timeoutMs: DRAIN_STEP_TIMEOUT_MS,
  });
}

/**
 * The warm-up between the release of the destination and the flush: `warm` new messages sent
 * and delivered to the sink, while the `queued` ones stay deferred. Returns '' or what went
 * wrong (the sink counted more than the warm-up: a queued message went out before the flush).
 */
async function warmUpDrain(
  warm: OutboundCase,
  port: number,
  sink: Sink,
  queued: () => Promise<number>,
  c: OutboundCase,
): Promise<string> {
  const before = sink.count();
  const r = await fillSource(warm, port);
  if (!r.ok) return `warm-up: ${r.error}`;
  await waitSink(sink, before, warm.messages, performance.now());
  await waitFor(async () => (await queued()) === c.messages, DRAIN_STEP_TIMEOUT_MS);
  const sent = sink.count() - before;
  const left = await queued();
  if (sent !== warm.messages || left !== c.messages)
    return `warm-up: the sink counted ${sent} of ${warm.messages}, ${left} of ${c.messages} still queued`;
  return '';
}

function failed(error: string, partial: Partial<DrainRun> = {}): DrainRun {
  return {
    queuedBeforeRelease: 0,
    fillSeconds: 0,
    delivered: 0,
    drainSeconds: 0,
    queuedAfter: -1,
    ...partial,
    ok: false,
    error,
  };
}

/** Recipient states in a `queue list` result: how many messages, and how many with every recipient deferred. */
function deferredCount(list: unknown): { messages: number; allDeferred: number } {
  if (!Array.isArray(list)) return { messages: 0, allDeferred: 0 };
  let allDeferred = 0;
  for (const m of list as unknown[]) {
    const rcpts: unknown = typeof m === 'object' && m !== null && 'recipients' in m ? m.recipients : [];
    if (
      Array.isArray(rcpts) &&
      rcpts.length > 0 &&
      (rcpts as unknown[]).every(
        (r) => typeof r === 'object' && r !== null && 'status' in r && r.status === 'deferred',
      )
    )
      allDeferred++;
  }
  return { messages: list.length, allDeferred };
}

function sternaDrainOptions(dir: string, relay: string): SternaOptions {
  return {
    dir,
    transportEntries: `"${SINK_DOMAIN}" = { relay = "${relay}", tls = "none" }`,
    extraConfig: `
[relay]
trusted_networks = ["127.0.0.1/32"]

[queue]
first_retry_ms = ${DRAIN_RETRY_MS}
max_backoff_ms = ${DRAIN_RETRY_MS}
`,
  };
}

/**
 * Sterna: fill while the relay points at a port where nothing listens (every message deferred,
 * the next try an hour away), stop, start again with the relay at the sink (the destination
 * back-off lives in memory, so it starts empty), check for a second that nothing is sent, then
 * flush over the control socket and time until the sink counted every message.
 */
async function sternaDrainRun(
  c: OutboundCase,
  warm: OutboundCase,
  dir: string,
  deadRelay: string,
  sinkRelay: string,
  sink: Sink,
  onCleanup: (stop: () => void) => void,
): Promise<DrainRun> {
  const filling = await startSterna(sternaDrainOptions(dir, deadRelay));
  onCleanup(filling.kill);
  let fillSeconds: number;
  try {
    if (filling.liveMessages() !== 0)
      return failed(`queue not empty before the run: ${filling.liveMessages()}`);
    const t0 = performance.now();
    const r = await fillSource(c, filling.port);
    if (!r.ok) return failed(`fill: ${r.error}`);
    let state = { messages: 0, allDeferred: 0 };
    const settled = await waitFor(
      async () => {
        state = deferredCount(await filling.control({ op: 'list' }));
        return state.messages === c.messages && state.allDeferred === c.messages;
      },
      DRAIN_STEP_TIMEOUT_MS,
      500,
    );
    fillSeconds = (performance.now() - t0) / 1000;
    if (!settled)
      return failed(`fill: ${state.allDeferred} of ${c.messages} deferred (${state.messages} queued)`, {
        fillSeconds,
      });
  } finally {
    await filling.stop();
  }
  const draining = await startSterna(sternaDrainOptions(dir, sinkRelay));
  onCleanup(draining.kill);
  try {
    const warmed = await warmUpDrain(
      warm,
      draining.port,
      sink,
      () => Promise.resolve(draining.liveMessages()),
      c,
    );
    if (warmed !== '') return failed(warmed, { fillSeconds });
    const before = sink.count();
    await sleep(SETTLE_MS);
    const queued = draining.liveMessages();
    if (sink.count() !== before)
      return failed(`${sink.count() - before} delivered before the flush`, { fillSeconds });
    if (queued !== c.messages)
      return failed(`${queued} of ${c.messages} queued after the restart`, { fillSeconds });
    const t0 = performance.now();
    const flushed = await draining.control({ op: 'flush' });
    const drainSeconds = await waitSink(sink, before, c.messages, t0);
    const delivered = sink.count() - before;
    await waitFor(() => draining.liveMessages() === 0, DRAIN_STEP_TIMEOUT_MS);
    const queuedAfter = draining.liveMessages();
    const nFlushed =
      typeof flushed === 'object' &&
      flushed !== null &&
      'flushed' in flushed &&
      Array.isArray(flushed.flushed)
        ? flushed.flushed.length
        : -1;
    const ok = delivered === c.messages && queuedAfter === 0 && nFlushed === c.messages;
    return {
      queuedBeforeRelease: queued,
      fillSeconds,
      delivered,
      drainSeconds,
      queuedAfter,
      ok,
      error: ok
        ? ''
        : `flushed ${nFlushed}, sink counted ${delivered} of ${c.messages}, ${queuedAfter} still queued`,
    };
  } finally {
    await draining.stop();
  }
}

/**
 * Postfix: defer_transports = smtp and a reload, fill (qmgr moves every message to the deferred
 * queue), clear defer_transports and reload, check for a second that nothing is sent, then
 * `postqueue -f` and time until the sink counted every message.
 */
async function postfixDrainRun(
  c: OutboundCase,
  warm: OutboundCase,
  postfix: PostfixInstance,
  sink: Sink,
): Promise<DrainRun> {
  await waitEmpty(postfix.queuedMessages);
  const empty = await postfix.queuedMessages();
  if (empty !== 0) return failed(`queue not empty before the run: ${empty}`);
  await postfix.setDeferTransports('smtp');
  const t0 = performance.now();
  const r = await fillSource(c, postfix.port);
  if (!r.ok) return failed(`fill: ${r.error}`);
  let counts = await postfix.queueCounts();
  const settled = await waitFor(
    async () => {
      counts = await postfix.queueCounts();
      return counts.deferred === c.messages && counts.incoming + counts.active + counts.maildrop === 0;
    },
    DRAIN_STEP_TIMEOUT_MS,
    100,
  );
  const fillSeconds = (performance.now() - t0) / 1000;
  if (!settled) return failed(`fill: queues ${JSON.stringify(counts)}`, { fillSeconds });
  await postfix.setDeferTransports('');
  const warmed = await warmUpDrain(warm, postfix.port, sink, postfix.queuedMessages, c);
  if (warmed !== '') return failed(warmed, { fillSeconds });
  const before = sink.count();
  await sleep(SETTLE_MS);
  if (sink.count() !== before)
    return failed(`${sink.count() - before} delivered before postqueue -f`, { fillSeconds });
  const queued = await postfix.queuedMessages();
  const t1 = performance.now();
  await postfix.flushQueue();
  const drainSeconds = await waitSink(sink, before, c.messages, t1);
  const delivered = sink.count() - before;
  await waitEmpty(postfix.queuedMessages);
  const queuedAfter = await postfix.queuedMessages();
  const ok = delivered === c.messages && queuedAfter === 0 && queued === c.messages;
  return {
    queuedBeforeRelease: queued,
    fillSeconds,
    delivered,
    drainSeconds,
    queuedAfter,
    ok,
    error: ok
      ? ''
      : `${queued} queued at release, sink counted ${delivered} of ${c.messages}, ${queuedAfter} still queued`,
  };
}

function drainSeries(runs: DrainRun[], c: OutboundCase): DrainSeries {
  const rates = runs.map((r) => (r.ok ? c.messages / r.drainSeconds : 0));
  return {
    runs,
    perSecond: median(rates),
    min: Math.min(...rates),
    max: Math.max(...rates),
    allOk: runs.every((r) => r.ok),
  };
}

export interface OutboundOptions {
  /** Working directory (exists, mode 0755 for Postfix). */
  dir: string;
  cases: readonly OutboundCase[];
  repeats: number;
  /** Messages (1 KiB) each server delivers before its measured runs, and before each drain's release. */
  warmUpMessages: number;
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
    const warm: OutboundCase = { bodyBytes: KiB, messages: o.warmUpMessages };
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
    // The queue drain. Sterna's end-to-end instance is done; the drain uses its own directory.
    await sterna.stop();
    sterna = null;
    const drain: DrainRow[] = [];
    const sternaDir = join(o.dir, 'sterna-drain');
    await mkdir(sternaDir);
    const deadRelay = `[${SINK_HOST}]:${await freePort()}`;
    for (const c of o.cases) {
      const s: DrainRun[] = [];
      const p: DrainRun[] = [];
      for (let i = 1; i <= o.repeats; i++) {
        const what = `drain ${c.bodyBytes / KiB} KiB, ${c.messages} messages [${i}/${o.repeats}]`;
        o.progress(`${what}: Sterna`);
        s.push(await sternaDrainRun(c, warm, sternaDir, deadRelay, relay, sink, o.onCleanup));
        if (postfix !== null) {
          o.progress(`${what}: Postfix`);
          p.push(await postfixDrainRun(c, warm, postfix, sink));
        }
        const last = [s.at(-1), p.at(-1)].find((r) => r !== undefined && !r.ok);
        if (last !== undefined) o.progress(`${what}: FAILED: ${last.error}`);
      }
      drain.push({
        case: c,
        sterna: drainSeries(s, c),
        postfix: postfix === null ? null : drainSeries(p, c),
      });
    }
    return {
      sessions: SESSIONS,
      rows,
      command: `smtp-sink -c -u postfix ${SINK_HOST}:PORT 1000; smtp-source -d -s ${SESSIONS} -m N -l SIZE -t ${TO} 127.0.0.1:PORT`,
      drain,
      drainMethod:
        `fill: smtp-source -d -s ${SESSIONS} -m N -l SIZE -t ${TO} while delivery cannot happen ` +
        `(Sterna: relay for ${SINK_DOMAIN} at ${SINK_HOST}:UNUSED-PORT, [queue] first_retry_ms = max_backoff_ms = ${DRAIN_RETRY_MS}; ` +
        `Postfix: postconf -e 'defer_transports = smtp', postfix reload); release: ` +
        `Sterna: stop, start with the relay at the sink, a warm-up of ${o.warmUpMessages} new 1 KiB messages ` +
        `delivered (not timed), then, timed from here, {"op":"flush"} on its control socket; ` +
        `Postfix: postconf -e 'defer_transports =', postfix reload, the same warm-up, then, timed from here, ` +
        `postqueue -f; until the sink counted N`,
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
  if (report.drain.length > 0) lines.push('', drainSummary(report.drain));
  return lines.join('\n');
}

function drainCell(s: DrainSeries | null): string {
  if (s === null) return 'n/a';
  if (!s.allOk) return `FAILED: ${s.runs.find((r) => !r.ok)?.error ?? ''}`;
  return s.runs.length === 1 ? rate(s.perSecond) : `${rate(s.perSecond)} (${rate(s.min)}–${rate(s.max)})`;
}

const seconds = (s: DrainSeries | null): string =>
  s === null ? 'n/a' : s.runs.map((r) => r.drainSeconds.toFixed(2)).join(', ');

/** The queue-drain table and its verdict. */
function drainSummary(rows: readonly DrainRow[]): string {
  const lines = [
    `Outbound queue drain: N messages queued while undeliverable, released at once, to smtp-sink on ${SINK_HOST} (median of runs, lowest–highest):`,
    '',
    '| size | messages per run | Sterna drain msg/s | Postfix drain msg/s | Sterna/Postfix | Sterna drain s (each run) | Postfix drain s (each run) |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  const verdicts: string[] = [];
  for (const r of rows) {
    const x =
      r.postfix === null || r.postfix.perSecond === 0 || !r.postfix.allOk
        ? null
        : r.sterna.perSecond / r.postfix.perSecond;
    lines.push(
      `| ${r.case.bodyBytes / KiB} KiB | ${r.case.messages} | ${drainCell(r.sterna)} | ${drainCell(r.postfix)} | ` +
        `${x === null ? 'n/a' : `${x.toFixed(2)}×`} | ${seconds(r.sterna)} | ${seconds(r.postfix)} |`,
    );
    if (x !== null)
      verdicts.push(
        `${r.case.bodyBytes / KiB} KiB ${x.toFixed(2)}× (${x >= 2 && r.sterna.allOk ? 'met' : 'NOT met'})`,
      );
  }
  if (verdicts.length > 0)
    lines.push('', `Target (outbound drain, Sterna ≥ 2 × Postfix): ${verdicts.join(', ')}`);
  return lines.join('\n');
}
