/**
 * The benchmark's own load generator for real-traffic rows (issue 11): every message on a NEW
 * connection, as mail from the internet arrives. Per message: connect, 220, EHLO, optionally
 * STARTTLS (RFC 3207) and EHLO again over TLS, MAIL, RCPT, DATA, the body, the final 250, QUIT.
 * Commands are sent one at a time (no pipelining), as smtp-source(1) does. It times each message
 * from the start of connect() to the 250 after the end-of-data dot (the end-to-end latency), and
 * counts messages per second over the whole run.
 * TLS: `full` does a full handshake on every connection; `resume` offers each session's last
 * TLS session (ticket, RFC 8446 2.2 / RFC 5077) on the next connection, and counts how many
 * handshakes the server actually resumed. Certificates are not verified (a benchmark on loopback).
 * One TLS context serves every connection of a run, as in a sending MTA (one SSL_CTX in Postfix's
 * smtp(8)): a context per connection, Node's default, cost the generator about 0.4 ms of CPU per
 * handshake, on the same cores as the server it measures.
 * runConnectLoad runs in this process; runConnectLoadProcesses splits the sessions over child
 * processes (`node connect-load.js '<json options>'`, JSON result on stdout) so that the
 * generator's own TLS work can use more than one core.
 * Benchmark code: trusted, talks only to the address it is given (127.0.0.1 in the bench).
 */
import { spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect, createSecureContext, type SecureContext, type TLSSocket } from 'node:tls';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  buildMessage,
  expect,
  ReplyReader,
  sendTransaction,
  SmtpError,
  type LoadOptions,
  type LoadResult,
} from './load.js';
import { percentile, pinned, timedSessions } from './machine.js';

export type TlsMode = 'none' | 'full' | 'resume';

/** A LoadOptions (load.ts), each message on a new connection, with or without STARTTLS. */
export interface ConnectLoadOptions extends LoadOptions {
  tls: TlsMode;
  /** Wait until this time (ms since the epoch) before starting: child processes start together. */
  startAtMs?: number;
}

/** A LoadResult (load.ts), with failed counting messages (a wrong reply, a lost connection, a
 * failed handshake) and latencies from connect() to the final 250, plus the TLS figures. */
export interface ConnectLoadResult extends LoadResult {
  /** TLS handshakes completed, and how many of them resumed a session. */
  handshakes: number;
  resumed: number;
  /** Protocol and cipher of the first TLS handshake ("" without TLS). */
  tlsVersion: string;
  cipher: string;
  /** The server certificate's key as seen by the client, e.g. "P-256" or "RSA-2048" ("" without TLS). */
  serverKey: string;
  /** Wall-clock start and end (ms since the epoch), to merge runs from several processes. */
  startedAtMs: number;
  endedAtMs: number;
  /** Every latency, sorted (for merging percentiles across processes). */
  latenciesMs: number[];
}

const EHLO = 'EHLO load.bench.local\r\n';

/**
 * Resolves when the TLS handshake over `socket` completes. onSession gets every session the
 * server hands out (TLS 1.2: during the handshake; TLS 1.3: tickets after it).
 */
function startTls(
  socket: Socket,
  secureContext: SecureContext,
  session: Buffer | undefined,
  onSession: (session: Buffer) => void,
): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const secure = tlsConnect({
      socket,
      secureContext,
      rejectUnauthorized: false,
      session,
      servername: 'bench.local',
    });
    secure.on('session', onSession);
    const onError = (err: Error): void => reject(err);
    secure.once('error', onError);
    secure.once('secureConnect', () => {
      secure.off('error', onError);
      resolve(secure);
    });
  });
}

/** Runs the load in this process and resolves with throughput and latency; never leaves a socket open. */
export async function runConnectLoad(options: ConnectLoadOptions): Promise<ConnectLoadResult> {
  const message = buildMessage(options.bodyBytes, options.from, options.to);
  const secureContext = createSecureContext({});
  const latencies: number[] = [];
  let next = 0;
  let failed = 0;
  let firstError = '';
  let handshakes = 0;
  let resumed = 0;
  let tlsVersion = '';
  let cipher = '';
  let serverKey = '';
  let stopped = false;
  const sockets = new Set<Socket>();
  const fail = (err: unknown): void => {
    failed++;
    if (firstError === '') firstError = err instanceof Error ? err.message : String(err);
  };

  /** One message on one new connection. Returns the TLS session to offer next time, if any. */
  const oneMessage = async (session: Buffer | undefined): Promise<Buffer | undefined> => {
    const start = performance.now();
    const plain = connect({ host: options.host, port: options.port });
    plain.setNoDelay(true);
    sockets.add(plain);
    let socket: Socket = plain;
    let newSession = session;
    // Errors surface through the reader; this listener only keeps them from being unhandled.
    const ignore = (): void => undefined;
    plain.on('error', ignore);
    try {
      let reader = new ReplyReader(plain);
      await expect(reader, 220, 'greeting');
      plain.write(EHLO);
      const ehlo = await expect(reader, 250, 'EHLO');
      if (options.tls !== 'none') {
        if (!/^250[- ]STARTTLS\b/im.test(ehlo.text)) throw new SmtpError('EHLO: no STARTTLS offered');
        plain.write('STARTTLS\r\n');
        await expect(reader, 220, 'STARTTLS');
        reader.detach();
        const secure = await startTls(
          plain,
          secureContext,
          options.tls === 'resume' ? session : undefined,
          (s) => (newSession = s),
        );
        secure.on('error', ignore);
        sockets.add(secure);
        socket = secure;
        handshakes++;
        if (secure.isSessionReused()) resumed++;
        if (tlsVersion === '') {
          tlsVersion = secure.getProtocol() ?? '';
          cipher = secure.getCipher().name;
          const cert = secure.getPeerCertificate();
          serverKey = cert.nistCurve ?? (cert.bits === undefined ? '?' : `RSA-${cert.bits}`);
        }
        reader = new ReplyReader(secure);
        secure.write(EHLO);
        await expect(reader, 250, 'EHLO after STARTTLS');
      }
      await sendTransaction(socket, reader, options, message);
      latencies.push(performance.now() - start);
      socket.write('QUIT\r\n');
      await reader.next().catch(() => undefined);
    } catch (err) {
      if (!stopped) fail(err);
    } finally {
      socket.destroy();
      plain.destroy();
      sockets.delete(socket);
      sockets.delete(plain);
    }
    return newSession;
  };

  const sessionLoop = async (): Promise<void> => {
    let session: Buffer | undefined;
    while (next < options.messages && !stopped) {
      next++;
      session = await oneMessage(session);
    }
  };

  if (options.startAtMs !== undefined && options.startAtMs > Date.now())
    await new Promise((resolve) => setTimeout(resolve, (options.startAtMs ?? 0) - Date.now()));
  const startedAtMs = Date.now();
  const run = await timedSessions(
    options.sessions,
    options.timeoutMs,
    sessionLoop,
    () => {
      fail(new Error(`timed out after ${options.timeoutMs} ms`));
      stopped = true;
      for (const s of sockets) s.destroy();
    },
    latencies,
  );
  return {
    ...run,
    failed,
    firstError,
    handshakes,
    resumed,
    tlsVersion,
    cipher,
    serverKey,
    startedAtMs,
    endedAtMs: Date.now(),
    latenciesMs: latencies,
  };
}

/** Merges the results of processes that ran at the same time into one. */
export function mergeResults(parts: readonly ConnectLoadResult[]): ConnectLoadResult {
  const latencies = parts.flatMap((p) => p.latenciesMs).sort((a, b) => a - b);
  const startedAtMs = Math.min(...parts.map((p) => p.startedAtMs));
  const endedAtMs = Math.max(...parts.map((p) => p.endedAtMs));
  const seconds = Math.max(0.001, (endedAtMs - startedAtMs) / 1000);
  const sum = (f: (p: ConnectLoadResult) => number): number => parts.reduce((n, p) => n + f(p), 0);
  return {
    accepted: latencies.length,
    failed: sum((p) => p.failed),
    firstError: parts.find((p) => p.firstError !== '')?.firstError ?? '',
    seconds,
    messagesPerSecond: latencies.length / seconds,
    p50Ms: percentile(latencies, 0.5),
    p99Ms: percentile(latencies, 0.99),
    maxMs: latencies.at(-1) ?? 0,
    handshakes: sum((p) => p.handshakes),
    resumed: sum((p) => p.resumed),
    tlsVersion: parts.find((p) => p.tlsVersion !== '')?.tlsVersion ?? '',
    cipher: parts.find((p) => p.cipher !== '')?.cipher ?? '',
    serverKey: parts.find((p) => p.serverKey !== '')?.serverKey ?? '',
    startedAtMs,
    endedAtMs,
    latenciesMs: latencies,
  };
}

/** Splits `total` into `n` near-equal non-negative parts. */
export function split(total: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => Math.floor(total / n) + (i < total % n ? 1 : 0));
}

const SELF = fileURLToPath(import.meta.url);
/** How long after spawning the child processes they all start sending. */
const CHILD_START_MS = 1000;

/** Runs one child process with its share of the load; rejects if it fails to report. */
function runChild(options: ConnectLoadOptions): Promise<ConnectLoadResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(...pinned('load', process.execPath, [SELF, JSON.stringify(options)]), {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-2000)));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs + 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`connect-load child exited ${String(code)}: ${err.trim()}`));
      try {
        // Our own child's JSON.stringify of a ConnectLoadResult (runConnectLoad below).
        resolve(JSON.parse(out) as ConnectLoadResult);
      } catch {
        reject(new Error(`connect-load child printed no result: ${out.slice(0, 200)} ${err.trim()}`));
      }
    });
  });
}

/**
 * Runs the load over `processes` child processes (at most one per session), the sessions and
 * messages split evenly, and merges their results.
 */
export async function runConnectLoadProcesses(
  options: ConnectLoadOptions,
  processes: number,
): Promise<ConnectLoadResult> {
  const n = Math.max(1, Math.min(processes, options.sessions));
  const sessions = split(options.sessions, n);
  const messages = split(options.messages, n);
  // Node starts in well under a second: every child waits for the same moment to begin.
  const startAtMs = Date.now() + CHILD_START_MS;
  const parts = await Promise.all(
    sessions.map((s, i) => runChild({ ...options, sessions: s, messages: messages[i] ?? 0, startAtMs })),
  );
  return mergeResults(parts);
}

/** The command line, for the docs. */
export function connectLoadCommand(o: Omit<ConnectLoadOptions, 'host' | 'port'>, processes: number): string {
  return (
    `connect-load (bench/connect-load.ts): ${o.sessions} sessions in ${processes} process(es), ` +
    `${o.messages} messages of ${o.bodyBytes} bytes, tls=${o.tls}, a new connection per message`
  );
}

// Run as a child: one JSON argument in, one JSON result out.
if (process.argv[1] !== undefined && pathToFileURL(process.argv[1]).href === import.meta.url) {
  // Written by runChild above from a ConnectLoadOptions.
  const options = JSON.parse(process.argv[2] ?? '{}') as ConnectLoadOptions;
  runConnectLoad(options).then(
    (r) => process.stdout.write(JSON.stringify(r)),
    (err: unknown) => {
      process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
