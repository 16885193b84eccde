/**
 * Helpers for interop tests that drive real client programs installed from Debian (swaks, curl,
 * python3): find a program, run it bounded in time with its output captured, write the message it
 * sends, and check what Sterna put in the Maildir, byte for byte.
 *
 * A missing program fails the test file under CI=true (.ci/run installs every one of them) and
 * skips the test loudly everywhere else. Follows RFC 5321 4.4 (trace headers), RFC 3848 ("with"
 * protocol names) and RFC 6531 4.3 (UTF8SMTP). Trust: test code only; runs programs with
 * arguments it builds itself, never through a shell.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { TEST_HOSTNAME } from './server.js';

/** What node:test's `test(name, options, fn)` needs: a skip reason, or false to run. */
export interface ToolRequirement {
  skip: string | false;
}

/** The Debian package that provides each program, for the error message. */
const DEBIAN_PACKAGE: Record<string, string> = {
  swaks: 'swaks',
  curl: 'curl',
  python3: 'python3',
  'systemd-analyze': 'systemd',
  dovecot: 'dovecot-core',
  promtool: 'prometheus',
};

const found = new Map<string, string | undefined>();

/**
 * Where Debian's package puts every client these tests run. It is searched before PATH, so a
 * pyenv, venv or Homebrew shim earlier on a developer's PATH does not replace the Debian client
 * under test (nor slow every run down by a shim's start-up).
 */
const DEBIAN_BIN = '/usr/bin';

function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The full path of the program `name`: /usr/bin first, then PATH; undefined when not installed. */
export function findTool(name: string): string | undefined {
  if (found.has(name)) return found.get(name);
  const dirs = [DEBIAN_BIN, ...(process.env['PATH'] ?? '').split(path.delimiter)];
  const hit = dirs.map((d) => path.join(d, name)).find((f) => path.isAbsolute(f) && isExecutable(f));
  found.set(name, hit);
  return hit;
}

/**
 * Options for the tests that run `name`. When it is missing: under CI=true, throws (the test file
 * fails, because .ci/run must install it); otherwise prints a warning to stderr and returns a skip
 * reason, so a developer without the program still sees that something did not run.
 */
export function requireTool(name: string): ToolRequirement {
  if (findTool(name) !== undefined) return { skip: false };
  const pkg = DEBIAN_PACKAGE[name] ?? name;
  if (process.env['CI'] === 'true') {
    throw new Error(
      `interop test needs "${name}", which is not installed (not in /usr/bin nor on PATH): .ci/run must install it (apt-get install ${pkg})`,
    );
  }
  process.stderr.write(`\n*** interop test skipped: ${name} not installed (apt-get install ${pkg}) ***\n\n`);
  return { skip: `${name} not installed` };
}

export interface ToolRun {
  /** The program as resolved by findTool (a full path), or the name as given. */
  command: string;
  args: string[];
  /** Exit code, or null when the program was killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  stdout: string;
  stderr: string;
}

export interface RunToolOptions {
  /** Killed (SIGKILL) after this long; default 20 s. */
  timeoutMs?: number;
  /** Written to the program's stdin, which is then closed. Default: stdin closed at once. */
  input?: string | Buffer;
  /** Added to (and overriding) the inherited environment. */
  env?: Record<string, string>;
}

/**
 * Runs a program (found by findTool) without a shell and resolves with everything it did; never
 * rejects because the program failed, only when it cannot be started at all.
 */
export function runTool(name: string, args: string[], opts: RunToolOptions = {}): Promise<ToolRun> {
  const command = findTool(name) ?? name;
  const timeoutMs = opts.timeoutMs ?? 20_000;
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      env: { ...process.env, ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        command,
        args,
        code,
        signal,
        timedOut,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
    // A program that exits without reading stdin makes this write fail with EPIPE; that is fine.
    child.stdin.on('error', () => undefined);
    child.stdin.end(opts.input ?? '');
  });
}

/** The command line, exit status and all output of a run, for an assertion message. */
export function describeRun(run: ToolRun): string {
  const status = run.timedOut
    ? 'timed out (killed)'
    : run.signal !== null
      ? `killed by ${run.signal}`
      : `exit code ${String(run.code)}`;
  return (
    `${run.command} ${run.args.map((a) => JSON.stringify(a)).join(' ')}\n${status}\n` +
    `--- stdout ---\n${run.stdout}\n--- stderr ---\n${run.stderr}\n--- end ---`
  );
}

/** Fails with the run's full output unless the program exited with code 0. */
export function assertRunOk(run: ToolRun): void {
  assert.ok(run.code === 0 && !run.timedOut, `client failed:\n${describeRun(run)}`);
}

/** A fresh directory under os.tmpdir(); `cleanup` removes it and everything in it. */
export async function makeTempDir(prefix: string): Promise<{ dir: string; cleanup(): Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Joins lines with CRLF (and ends with CRLF) as a message is sent over SMTP (RFC 5322 2.1). */
export function crlfMessage(lines: string[]): Buffer {
  return Buffer.from(lines.map((l) => `${l}\r\n`).join(''), 'utf8');
}

/** Writes `content` to `dir/name` and returns the path. */
export async function writeTempFile(dir: string, name: string, content: Buffer | string): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(file, content);
  return file;
}

/** The "queued as ID" queue id from a 250 reply somewhere in a client's output, if any. */
export function queueIdIn(output: string): string | undefined {
  return /queued as ([A-Za-z0-9]+)/.exec(output)?.[1];
}

export interface ExpectedDelivery {
  /** Envelope sender, as it must appear in Return-Path. */
  sender: string;
  /** The mailbox, as it must appear in Delivered-To and in the Received "for" clause. */
  recipient: string;
  /** The EHLO name the client used. */
  helo: string;
  /** RFC 3848 / RFC 6531 "with" keyword. */
  protocol: 'ESMTP' | 'ESMTPS' | 'ESMTPA' | 'ESMTPSA' | 'UTF8SMTP' | 'UTF8SMTPS' | 'UTF8SMTPA' | 'UTF8SMTPSA';
  /** The AUTH identity in the Received header; when absent, an authenticated protocol (…A) takes any. */
  authUser?: string;
  /** The exact bytes the client sent (without dot-stuffing or the final "."). */
  message: Buffer;
  /** The queue id from the 250 reply, when the client's output shows it. */
  qid?: string;
}

const DATE_RE = String.raw`(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} \+0000`;

const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Checks a delivered Maildir file: Return-Path, Delivered-To and one Received header (RFC 5321
 * 4.4) prepended, the TLS clause present exactly when the protocol says TLS, and then the
 * message exactly as the client sent it. Returns the queue id named in the Received header.
 */
export function assertDelivered(delivered: Buffer | undefined, want: ExpectedDelivery): string {
  assert.ok(delivered !== undefined, 'no message arrived in the Maildir');
  const text = delivered.toString('utf8');
  const tls = want.protocol.endsWith('S') || want.protocol.endsWith('SA');
  const head =
    `^Return-Path: <${escapeRe(want.sender)}>\r\n` +
    `Delivered-To: ${escapeRe(want.recipient)}\r\n` +
    `Received: from ${escapeRe(want.helo)} \\(\\[127\\.0\\.0\\.1\\]\\)\r\n` +
    (want.protocol.endsWith('A')
      ? `\t\\(Authenticated sender: ${want.authUser === undefined ? '[^)\r\n]+' : escapeRe(want.authUser)}\\)\r\n`
      : '') +
    `\tby ${escapeRe(TEST_HOSTNAME)} \\(Sterna\\) with ${want.protocol} id ([A-Za-z0-9]+)\r\n` +
    (tls ? `\t\\(version=TLSv1\\.[23] cipher=[A-Za-z0-9_-]+\\)\r\n` : '') +
    `\tfor <${escapeRe(want.recipient)}>;\r\n` +
    `\t${DATE_RE}\r\n`;
  const m = new RegExp(head, 'u').exec(text);
  assert.ok(m !== null, `trace headers not as expected (want ${head}):\n${text}`);
  const qid = m[1] ?? '';
  if (want.qid !== undefined) assert.equal(qid, want.qid, 'Received id is the queue id of the 250 reply');
  const prefixBytes = Buffer.byteLength(m[0], 'utf8');
  const rest = delivered.subarray(prefixBytes);
  assert.equal(
    rest.toString('utf8'),
    want.message.toString('utf8'),
    'the message after the trace headers is byte for byte what the client sent',
  );
  assert.ok(rest.equals(want.message), 'the same bytes, not only the same text');
  return qid;
}
