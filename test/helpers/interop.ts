/**
 * The scaffolding the client interop tests (swaks, curl, smtplib, Postfix) share: one Sterna per
 * test file with alice and bob as users and a scratch directory for the files a client reads,
 * started and stopped by node:test hooks only when the client program is installed; the
 * messages those clients send (RFC 5322, CRLF line ends); and the check that a client's message
 * was queued (the "queued as ID" of the 250 reply, RFC 5321 4.2) and delivered byte for byte
 * after Sterna's trace headers (RFC 5321 4.4, RFC 3848 / RFC 6531 4.3 "with" names).
 *
 * Running a client bounded in time (exit code, stdout, stderr) is runTool in tools.ts; a missing
 * client follows requireTool there: a loud skip locally, a failed test file under CI=true.
 * Trust: test code only; listens on 127.0.0.1, writes only under os.tmpdir().
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before } from 'node:test';
import { maildirPathFor } from '../../src/delivery/local/maildir.js';
import { waitForMessages } from './maildir.js';
import { startTestServer, type TestServer } from './server.js';
import {
  assertDelivered,
  crlfMessage,
  describeRun,
  makeTempDir,
  queueIdIn,
  requireTool,
  writeTempFile,
  type ExpectedDelivery,
  type ToolRequirement,
  type ToolRun,
} from './tools.js';

/** The local domain every interop mailbox is in. */
const DOMAIN = 'sterna.test';

export interface InteropServerOptions {
  /** Prefix of the scratch directory under os.tmpdir(), e.g. "sterna-curl-". */
  tmpPrefix: string;
  /** Password of alice@sterna.test, the submitting user; bob@sterna.test's is "bob password". */
  alicePassword: string;
  /** Users beyond alice and bob. */
  moreUsers?: { address: string; password: string }[];
}

/** A running Sterna for one interop test file, and the scratch directory its clients read from. */
export interface InteropServer {
  server: TestServer;
  /** The server's 127.0.0.1 listener ports: smtp (25), submission (587), submissions (465). */
  ports: TestServer['ports'];
  /** The scratch directory (under os.tmpdir()) for message files and client scripts. */
  tmpDir: string;
  /** Writes `content` to a fresh numbered file "msg-N.eml" in tmpDir and returns its path. */
  messageFile(content: Buffer | string): Promise<string>;
  /** Stops the server, removes its data directory and the scratch directory. */
  cleanup(): Promise<void>;
}

/** Starts Sterna with alice@sterna.test and bob@sterna.test (and moreUsers) and a scratch directory. */
export async function startInteropServer(opts: InteropServerOptions): Promise<InteropServer> {
  const server = await startTestServer({
    users: [
      { address: 'alice@sterna.test', password: opts.alicePassword },
      { address: 'bob@sterna.test', password: 'bob password' },
      ...(opts.moreUsers ?? []),
    ],
  });
  const tmp = await makeTempDir(opts.tmpPrefix);
  let files = 0;
  return {
    server,
    ports: server.ports,
    tmpDir: tmp.dir,
    messageFile(content) {
      files++;
      return writeTempFile(tmp.dir, `msg-${files}.eml`, content);
    },
    async cleanup() {
      await server.stop({ remove: true });
      await tmp.cleanup();
    },
  };
}

/** What a test file that drives one client program gets from useInteropServer. */
export interface InteropFixture {
  /** The `test(name, options, fn)` options: skip (loudly) when the program is not installed. */
  readonly tool: ToolRequirement;
  /** The running server; only inside tests and hooks that run (not when skipped). */
  readonly env: InteropServer;
}

export interface InteropFixtureOptions extends InteropServerOptions {
  /**
   * More set-up once the server runs (e.g. writing a client script into tmpDir). Top-level
   * before hooks of one file may run at the same time, so set-up that needs the server goes here
   * rather than in a before hook of its own.
   */
  setup?: (env: InteropServer) => Promise<void>;
}

/**
 * For a test file that drives the client program `toolName`: checks for the program now (at
 * import, so under CI=true a missing one fails the file, see requireTool) and registers before
 * and after hooks that start (then run opts.setup) and clean up an InteropServer, unless the
 * tests are skipped. Call it once, at the top level of the test file.
 */
export function useInteropServer(toolName: string, opts: InteropFixtureOptions): InteropFixture {
  const tool = requireTool(toolName);
  let env: InteropServer | undefined;
  before(async () => {
    if (tool.skip !== false) return;
    env = await startInteropServer(opts);
    await opts.setup?.(env);
  });
  after(async () => {
    if (tool.skip !== false) return;
    await env?.cleanup();
  });
  return {
    tool,
    get env(): InteropServer {
      assert.ok(env !== undefined, `the ${toolName} interop server is not running`);
      return env;
    },
  };
}

/** The fields of a message a test client sends; see composeMessage. */
export interface MessageSpec {
  from: string;
  to: string;
  subject: string;
  date: string;
  /** With its angle brackets; see messageIdFor. */
  messageId: string;
  /** Further header fields, whole lines, after Message-ID. */
  headers?: string[];
  body: string[];
}

/**
 * A message with its own Date and Message-ID, so submission (RFC 6409 8.2, 8.3) adds nothing to
 * it: From, To, Subject, Date, Message-ID, any further header fields, a blank line, the body;
 * every line ended with CRLF.
 */
export function composeMessage(m: MessageSpec): Buffer {
  return crlfMessage([
    `From: ${m.from}`,
    `To: ${m.to}`,
    `Subject: ${m.subject}`,
    `Date: ${m.date}`,
    `Message-ID: ${m.messageId}`,
    ...(m.headers ?? []),
    '',
    ...m.body,
  ]);
}

/** "<subject@host>" with every character of the subject but ASCII letters and digits as "-". */
export function messageIdFor(subject: string, host: string): string {
  return `<${subject.replace(/[^A-Za-z0-9]/g, '-')}@${host}>`;
}

/** Alice's message to Bob from the client at `host`, dated `date`; its Message-ID from the subject. */
export function aliceToBob(host: string, date: string, subject: string, body: string[]): Buffer {
  return composeMessage({
    from: 'Alice <alice@sterna.test>',
    to: 'Bob <bob@sterna.test>',
    subject,
    date,
    messageId: messageIdFor(subject, host),
    body,
  });
}

/**
 * Waits for the `count`-th message in the Maildir of `recipient` (a mailbox of sterna.test,
 * possibly with a non-ASCII local part) and returns it; fails, with the client's run, when fewer
 * than `count` arrive in time.
 */
export async function deliveredMessage(
  server: TestServer,
  recipient: string,
  count: number,
  run: ToolRun,
): Promise<Buffer | undefined> {
  const local = recipient.slice(0, recipient.lastIndexOf('@'));
  const dirName = path.basename(maildirPathFor('/', { local, domain: DOMAIN }));
  const msgs = await waitForMessages(server.dataDir, DOMAIN, dirName, count);
  assert.equal(msgs.length, count, `${local}'s Maildir should hold ${count} message(s)\n${describeRun(run)}`);
  return msgs[count - 1];
}

/** What a client sent and where it must land; see assertQueuedAndDelivered. */
export interface ClientDelivery extends Omit<ExpectedDelivery, 'qid'> {
  /** The client's transcript holding the server's replies (its stdout or its stderr). */
  transcript: string;
  /** Which message of the recipient's Maildir this is: 1 for the first. */
  count: number;
}

/**
 * The end of every successful interop send: the transcript names the queue id of the 250 reply,
 * and the `count`-th message in the recipient's Maildir is the client's message byte for byte
 * after trace headers that carry that id (assertDelivered).
 */
export async function assertQueuedAndDelivered(
  env: InteropServer,
  run: ToolRun,
  want: ClientDelivery,
): Promise<void> {
  const { transcript, count, ...expected } = want;
  const qid = queueIdIn(transcript);
  assert.ok(qid !== undefined, describeRun(run));
  assertDelivered(await deliveredMessage(env.server, want.recipient, count, run), { ...expected, qid });
}

/** Calls `read` every `intervalMs` until `done` holds of its result or `timeoutMs` is up; returns the last result. */
export async function pollUntil<T>(
  read: () => Promise<T>,
  done: (value: T) => boolean,
  timeoutMs: number,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let value = await read();
  while (!done(value) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, intervalMs));
    value = await read();
  }
  return value;
}
