/**
 * What the content filter tests share (test/filters-*.test.ts): the runner of the filter daemons
 * (rspamd, spamd, opendkim: spawned in the foreground, logged to a file, ready when their port
 * answers, stopped by pid with SIGTERM, then SIGKILL after a bound), a log that keeps every
 * record (to find a filter's line by queue id), the test mailboxes, a well-formed message from
 * Alice, one transaction from Alice and the check of what was stored for it.
 * Trust: test code only; binds 127.0.0.1.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import net from 'node:net';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import path from 'node:path';
import { transact } from './mailauth.js';
import { sleep, tail } from './process.js';
import type { TestReply } from './smtp-client.js';
import { assertDelivered, crlfMessage } from './tools.js';

export interface Daemon {
  port: number;
  dir: string;
  logFile: string;
  /** Stops the process (idempotent) and waits until it is gone. */
  stop(): Promise<void>;
  /** stop(), then removes the directory. */
  cleanup(): Promise<void>;
}

/** Resolves once something accepts TCP connections on 127.0.0.1:port (bounded). */
async function waitForPort(
  port: number,
  child: ChildProcess,
  logFile: string,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(
        `daemon exited (${String(child.exitCode ?? child.signalCode)}):\n${await tail(logFile, 30)}`,
      );
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline)
      throw new Error(`daemon not listening on ${port} after ${timeoutMs} ms:\n${await tail(logFile, 30)}`);
    await sleep(100);
  }
}

/** Runs `command args` in the foreground in dir; ready when port accepts connections. */
export async function runDaemon(opts: {
  command: string;
  args: string[];
  dir: string;
  port: number;
  startTimeoutMs?: number;
}): Promise<Daemon> {
  const logFile = path.join(opts.dir, 'daemon.log');
  const out = createWriteStream(logFile);
  const child = spawn(opts.command, opts.args, { cwd: opts.dir, stdio: ['ignore', 'pipe', 'pipe'] });
  child.on('error', (err) => out.write(`spawn failed: ${err.message}\n`));
  child.stdout.pipe(out);
  child.stderr.pipe(out);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      process.kill(child.pid, 'SIGTERM');
      const killer = setTimeout(() => {
        if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, 'SIGKILL');
      }, 10_000);
      await exited;
      clearTimeout(killer);
    }
  };
  try {
    await waitForPort(opts.port, child, logFile, opts.startTimeoutMs ?? 240_000);
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    port: opts.port,
    dir: opts.dir,
    logFile,
    stop,
    async cleanup() {
      await stop();
      await rm(opts.dir, { recursive: true, force: true });
    },
  };
}

/** A log that keeps every record, to find the filter's line by queue id. */
export class CapturedLog {
  readonly records: Record<string, unknown>[] = [];
  readonly logger = pino(
    { level: 'info' },
    new Writable({
      write: (chunk: Buffer, _enc, done) => {
        for (const line of chunk.toString('utf8').split('\n'))
          if (line !== '') this.records.push(JSON.parse(line) as Record<string, unknown>);
        done();
      },
    }),
  );

  filterLines(qid: string): Record<string, unknown>[] {
    return this.records.filter((r) => r['msg'] === 'filter' && r['qid'] === qid);
  }
}

/** The mailboxes of the filter tests' servers. */
export const FILTER_USERS = ['bob', 'carol', 'dave', 'erin'].map((u) => ({
  address: `${u}@sterna.test`,
  password: 'pw-12345678',
}));

/** A well-formed message from Alice (every field a spam filter expects), extra fields last. */
export function aliceMessage(subject: string, body: string, extra: string[] = []): Buffer {
  return crlfMessage([
    'From: Alice <alice@example.com>',
    'To: Bob <bob@sterna.test>',
    `Subject: ${subject}`,
    'Date: Sat, 05 Dec 2026 08:00:00 +0000',
    `Message-ID: <${subject.replace(/\W/g, '')}@example.com>`,
    ...extra,
    '',
    body,
  ]);
}

/**
 * The client's wait for a reply: a filter's first scan on a loaded machine (spamd compiles its
 * rules) can take tens of seconds.
 */
export const FILTER_CLIENT_TIMEOUT_MS = 90_000;

/** One transaction from alice@example.com on the smtp listener; the end-of-data reply. */
export function sendFromAlice(port: number, to: string, message: Buffer, bdat = false): Promise<TestReply> {
  return transact(
    port,
    { from: 'alice@example.com', to, message, bdat },
    { timeoutMs: FILTER_CLIENT_TIMEOUT_MS },
  );
}

/** The stored file is Alice's message to `to`, byte for byte, below our trace fields. */
export function assertStoredFromAlice(stored: Buffer | undefined, to: string, message: Buffer): void {
  assertDelivered(stored, {
    sender: 'alice@example.com',
    recipient: to,
    helo: 'client.test',
    protocol: 'ESMTP',
    message,
  });
}

/**
 * A stored file split: the fields matching `top` just below Return-Path and Delivered-To (a
 * filter's fields), and the file without them.
 */
export function splitTopFields(stored: Buffer | undefined, top: RegExp): { fields: string; rest: Buffer } {
  const text = stored?.toString('utf8') ?? '';
  const field = `(?:${top.source}[^\\r\\n]*\\r\\n(?:[ \\t][^\\r\\n]*\\r\\n)*)`;
  const m = new RegExp(`^(Return-Path: [^\\r\\n]*\\r\\nDelivered-To: [^\\r\\n]*\\r\\n)(${field}*)`).exec(
    text,
  );
  assert.ok(
    m !== null && (m[2] ?? '') !== '',
    `no ${top.source} fields on top of the stored message:\n${text}`,
  );
  return { fields: m[2] ?? '', rest: Buffer.from((m[1] ?? '') + text.slice(m[0].length)) };
}
