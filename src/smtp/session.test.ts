/**
 * Unit tests for src/smtp/session.ts: the SMTP session state machine, driven without sockets
 * through fake hooks (an in-memory spool sink, a recipient table, one good user, a fixed clock
 * and nonce). Each test names the RFC rule it checks and asserts exact reply codes and
 * enhanced codes (RFC 5321, 1870, 2920, 3030, 3207, 3461, 3848, 4954, 6409, 6531).
 */

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import type { Credentials } from '../auth/sasl.js';
import type { Envelope, ListenerKind, TlsInfo } from '../message/envelope.js';
import { formatMailbox } from './address.js';
import { reply, type Reply } from './replies.js';
import {
  Session,
  type Action,
  type ClientView,
  type DataError,
  type MessageSink,
  type SessionConfig,
  type SessionHooks,
  type SessionLimits,
} from './session.js';

// ---- harness ------------------------------------------------------------------------------

const HOST = 'mx.sterna.test';
const NOW = Date.UTC(2026, 0, 15, 10, 30, 0);
const DATE = 'Thu, 15 Jan 2026 10:30:00 +0000';
const NONCE = 'nonce123';
const TLS: TlsInfo = { version: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384' };
const CLIENT: ClientView = { ip: '192.0.2.10', port: 40000, hostname: 'client.example.test' };
const HELO = 'client.helo.test';
const USER = 'alice@local.test';
const PASSWORD = 'correct horse';
/** What each user may put in MAIL FROM when smtp.enforce_sender is on. */
const OWNED: ReadonlyMap<string, readonly string[]> = new Map([[USER, [USER, '']]]);
const MAILBOXES: ReadonlySet<string> = new Set(['alice', 'bob', 'carol']);

const LIMITS: SessionLimits = {
  commandLineBytes: 512,
  textLineBytes: 1000,
  messageBytes: 10_000,
  recipients: 100,
  errors: 10,
  receivedHeaders: 30,
};

/** An in-memory spool writer that records what it was given. */
class FakeSink implements MessageSink {
  readonly qid: string;
  readonly chunks: Buffer[] = [];
  committed: Envelope | null = null;
  commits = 0;
  aborts = 0;
  readonly #commitError: Error | undefined;

  constructor(qid: string, commitError: Error | undefined) {
    this.qid = qid;
    this.#commitError = commitError;
  }

  get text(): string {
    return Buffer.concat(this.chunks).toString('utf8');
  }

  get size(): number {
    return this.chunks.reduce((n, c) => n + c.length, 0);
  }

  write(chunk: Buffer): Promise<void> {
    this.chunks.push(Buffer.from(chunk));
    return Promise.resolve();
  }

  commit(envelope: Envelope): Promise<void> {
    this.commits++;
    if (this.#commitError !== undefined) return Promise.reject(this.#commitError);
    this.committed = envelope;
    return Promise.resolve();
  }

  abort(): void {
    this.aborts++;
  }
}

interface HarnessOptions {
  listener?: ListenerKind;
  /** The session starts with TLS already active (implicit TLS, or after STARTTLS). */
  tls?: TlsInfo;
  cfg?: Partial<Omit<SessionConfig, 'limits' | 'listener'>>;
  limits?: Partial<SessionLimits>;
  /** Local parts that exist at local.test. */
  mailboxes?: ReadonlySet<string>;
  /** How a local.test recipient that does not exist is refused. */
  rejectMode?: 'permanent' | 'temporary';
  lockedOut?: boolean;
  authDelayMs?: number;
  commitError?: Error;
  beginError?: Error;
  /** checkRecipient and authenticate throw this (a lookup that could not be made). */
  hookError?: Error;
}

interface Harness {
  session: Session;
  sinks: FakeSink[];
  events: { name: string; fields: Record<string, unknown> }[];
  credentials: Credentials[];
}

function harness(opts: HarnessOptions = {}): Harness {
  const sinks: FakeSink[] = [];
  const events: Harness['events'] = [];
  const credentials: Credentials[] = [];
  const mailboxes = opts.mailboxes ?? MAILBOXES;
  const known = (local: string, domain: string): boolean => domain === 'local.test' && mailboxes.has(local);
  const hooks: SessionHooks = {
    now: () => NOW,
    nonce: () => NONCE,
    checkRecipient: (rcpt, ctx) => {
      if (opts.hookError !== undefined) return Promise.reject(opts.hookError);
      const address = formatMailbox(rcpt);
      if (known(rcpt.local, rcpt.domain)) return Promise.resolve({ kind: 'accept' });
      if (rcpt.domain === 'local.test') {
        const r =
          opts.rejectMode === 'temporary'
            ? reply('RECIPIENT_LOOKUP_FAILED')
            : reply('NO_SUCH_USER', { address });
        return Promise.resolve({ kind: 'reject', reply: r });
      }
      if (ctx.authUser !== undefined) return Promise.resolve({ kind: 'accept' });
      return Promise.resolve({ kind: 'reject', reply: reply('RELAY_DENIED', { address }) });
    },
    verifyAddress: (rcpt) => Promise.resolve(known(rcpt.local, rcpt.domain)),
    isAuthLockedOut: () => opts.lockedOut === true,
    authenticate: (creds) => {
      if (opts.hookError !== undefined) return Promise.reject(opts.hookError);
      credentials.push(creds);
      let ok: boolean;
      let user: string;
      if (creds.kind === 'password') {
        user = creds.authcid;
        ok = creds.authcid === USER && creds.password === PASSWORD;
      } else if (creds.kind === 'cram-md5') {
        user = creds.username;
        const digest = createHmac('md5', PASSWORD).update(creds.challenge).digest('hex');
        ok = creds.username === USER && creds.digestHex === digest;
      } else {
        user = creds.authzid;
        ok = false;
      }
      return Promise.resolve(ok ? { kind: 'ok', user } : { kind: 'fail', delayMs: opts.authDelayMs ?? 250 });
    },
    mayUseSender: (user, sender) => OWNED.get(user)?.includes(sender) === true,
    beginMessage: () => {
      if (opts.beginError !== undefined) throw opts.beginError;
      const sink = new FakeSink(`Q${sinks.length + 1}`, opts.commitError);
      sinks.push(sink);
      return sink;
    },
    spoolFailureReply: (err) =>
      err instanceof Error && 'code' in err && err.code === 'ENOSPC'
        ? reply('SPOOL_FULL')
        : reply('SPOOL_ERROR'),
    event: (name, fields) => {
      events.push({ name, fields });
    },
  };
  const cfg: SessionConfig = {
    hostname: HOST,
    banner: 'ESMTP Sterna ready',
    listener: opts.listener ?? 'smtp',
    limits: { ...LIMITS, ...opts.limits },
    vrfy: 'ambiguous',
    authMechanisms: ['PLAIN', 'LOGIN'],
    authAllowPlaintext: false,
    authOnSmtp: false,
    tlsAvailable: true,
    enforceSender: true,
    ...opts.cfg,
  };
  const session = new Session(cfg, hooks, CLIENT, opts.tls);
  return { session, sinks, events, credentials };
}

function run(h: Harness, line: string | Buffer): Promise<Action[]> {
  return h.session.handle({
    kind: 'line',
    line: typeof line === 'string' ? Buffer.from(line, 'utf8') : line,
  });
}

/** One string per action: "250 2.1.0" for a reply (just "354" without enhanced code), else its kind. */
function summary(actions: readonly Action[]): string[] {
  return actions.map((a) => {
    switch (a.kind) {
      case 'reply':
        return a.reply.enhanced === undefined ? `${a.reply.code}` : `${a.reply.code} ${a.reply.enhanced}`;
      case 'delay':
        return `delay ${a.ms}`;
      case 'receive-chunk':
        return `receive-chunk ${a.size}${a.body === null ? ' discard' : ''}`;
      case 'receive-data':
        return a.body === null ? 'receive-data discard' : 'receive-data';
      case 'start-tls':
      case 'close':
        return a.kind;
      default: {
        const never: never = a;
        throw new Error(`unexpected action ${JSON.stringify(never)}`);
      }
    }
  });
}

async function say(h: Harness, line: string | Buffer): Promise<string[]> {
  return summary(await run(h, line));
}

/** The only reply among the actions. */
function theReply(actions: readonly Action[]): Reply {
  const replies = actions.flatMap((a) => (a.kind === 'reply' ? [a.reply] : []));
  assert.equal(replies.length, 1, `expected one reply, got ${JSON.stringify(actions)}`);
  return replies[0]!;
}

function b64(s: string): string {
  return Buffer.from(s, 'utf8').toString('base64');
}

async function ehlo(h: Harness): Promise<void> {
  assert.deepEqual(await say(h, `EHLO ${HELO}`), ['250']);
}

/** MAIL FROM and RCPT TOs, each expected to be accepted. */
async function envelope(h: Harness, from: string, rcpts: readonly string[], mailParams = ''): Promise<void> {
  assert.deepEqual(await say(h, `MAIL FROM:<${from}>${mailParams === '' ? '' : ` ${mailParams}`}`), [
    '250 2.1.0',
  ]);
  for (const r of rcpts) assert.deepEqual(await say(h, `RCPT TO:<${r}>`), ['250 2.1.5']);
}

/** After the 'receive-data' action: writes the decoded body to its MessageBody, then ends the data. */
async function sendData(
  h: Harness,
  start: readonly Action[],
  chunks: readonly (string | Buffer)[],
  error: DataError | null = null,
  writeError?: unknown,
): Promise<Action[]> {
  const rd = start.find((a) => a.kind === 'receive-data');
  assert.ok(rd !== undefined, `expected a receive-data action, got ${JSON.stringify(summary(start))}`);
  if (rd.body !== null) for (const c of chunks) await rd.body.write(Buffer.from(c));
  return h.session.handle(
    writeError === undefined ? { kind: 'data-end', error } : { kind: 'data-end', error, writeError },
  );
}

/** DATA, body, end of data: the actions after the body. */
async function data(h: Harness, chunks: readonly (string | Buffer)[], error: DataError | null = null) {
  const start = await run(h, 'DATA');
  assert.deepEqual(summary(start), ['354', 'receive-data']);
  return sendData(h, start, chunks, error);
}

/** After a 'receive-chunk' action: writes the chunk to its body (unless discarded), then ends the chunk. */
async function sendChunk(
  h: Harness,
  start: readonly Action[],
  bytes: string,
  writeError?: unknown,
  error: DataError | null = null,
) {
  assert.equal(start.length, 1);
  const rc = start[0];
  assert.ok(
    rc !== undefined && rc.kind === 'receive-chunk',
    `expected receive-chunk, got ${JSON.stringify(start)}`,
  );
  assert.equal(rc.size, Buffer.byteLength(bytes));
  if (rc.body !== null) await rc.body.write(Buffer.from(bytes, 'utf8'));
  return h.session.handle(
    writeError === undefined ? { kind: 'chunk-end', error } : { kind: 'chunk-end', error, writeError },
  );
}

async function bdat(h: Harness, bytes: string, last = false): Promise<Action[]> {
  const start = await run(h, `BDAT ${Buffer.byteLength(bytes)}${last ? ' LAST' : ''}`);
  return sendChunk(h, start, bytes);
}

/** A submission session over TLS, EHLO sent, authenticated as USER. */
async function authedSubmission(opts: HarnessOptions = {}): Promise<Harness> {
  const h = harness({ listener: 'submission', tls: TLS, ...opts });
  await ehlo(h);
  assert.deepEqual(await say(h, `AUTH PLAIN ${b64(`\0${USER}\0${PASSWORD}`)}`), ['235 2.7.0']);
  return h;
}

function received(opts: { protocol: string; tls?: boolean; qid?: string; forRcpt?: string }): string {
  return (
    `Received: from ${HELO} (client.example.test [192.0.2.10])\r\n` +
    (opts.protocol.endsWith('A') ? `\t(Authenticated sender: ${USER})\r\n` : '') +
    `\tby ${HOST} (Sterna) with ${opts.protocol} id ${opts.qid ?? 'Q1'}` +
    (opts.tls === true ? `\r\n\t(version=${TLS.version} cipher=${TLS.cipher})` : '') +
    (opts.forRcpt === undefined ? '' : `\r\n\tfor <${opts.forRcpt}>`) +
    `;\r\n\t${DATE}\r\n`
  );
}

const BODY = 'Subject: hello\r\nMessage-ID: <m1@client.test>\r\nDate: ' + DATE + '\r\n\r\nHi.\r\n';

function ehloLines(actions: readonly Action[]): string[] {
  return theReply(actions).lines;
}

const BASE_KEYWORDS = [
  'PIPELINING',
  'SIZE 10000',
  '8BITMIME',
  'SMTPUTF8',
  'ENHANCEDSTATUSCODES',
  'CHUNKING',
  'DSN',
];
const GREET_LINE = `${HOST} Hello ${HELO} [192.0.2.10]`;

// ---- greeting, HELO, EHLO -----------------------------------------------------------------

test('RFC 5321 4.2: the greeting is 220 with the host name and banner', () => {
  const h = harness();
  assert.deepEqual(h.session.greeting(), [
    { kind: 'reply', reply: { code: 220, lines: [`${HOST} ESMTP Sterna ready`] } },
  ]);
});

test('RFC 5321 4.1.1.1: HELO is answered 250 with our name, without extensions', async () => {
  const h = harness();
  const actions = await run(h, `HELO ${HELO}`);
  assert.deepEqual(actions, [{ kind: 'reply', reply: { code: 250, lines: [GREET_LINE] } }]);
});

test('RFC 5321 4.1.1.1: EHLO lists the extensions; STARTTLS offered before TLS when available', async () => {
  const h = harness();
  assert.deepEqual(ehloLines(await run(h, `EHLO ${HELO}`)), [GREET_LINE, ...BASE_KEYWORDS, 'STARTTLS']);
});

test('RFC 3207 4.2: STARTTLS is not offered once TLS is active', async () => {
  const h = harness({ tls: TLS });
  assert.deepEqual(ehloLines(await run(h, `EHLO ${HELO}`)), [GREET_LINE, ...BASE_KEYWORDS]);
});

test('RFC 3207: STARTTLS is not offered without a certificate (tlsAvailable false)', async () => {
  const h = harness({ cfg: { tlsAvailable: false } });
  assert.deepEqual(ehloLines(await run(h, `EHLO ${HELO}`)), [GREET_LINE, ...BASE_KEYWORDS]);
});

test('RFC 4954 / RFC 6409: AUTH is never offered on submission before TLS', async () => {
  const h = harness({ listener: 'submission' });
  assert.deepEqual(ehloLines(await run(h, `EHLO ${HELO}`)), [GREET_LINE, ...BASE_KEYWORDS, 'STARTTLS']);
});

test('RFC 4954: AUTH is offered on submission with TLS, with the configured mechanisms', async () => {
  const h = harness({
    listener: 'submission',
    tls: TLS,
    cfg: { authMechanisms: ['PLAIN', 'LOGIN', 'CRAM-MD5'] },
  });
  assert.deepEqual(ehloLines(await run(h, `EHLO ${HELO}`)), [
    GREET_LINE,
    ...BASE_KEYWORDS,
    'AUTH PLAIN LOGIN CRAM-MD5',
  ]);
});

test('RFC 4954: AUTH is offered on submission without TLS only when plaintext AUTH is allowed', async () => {
  const h = harness({ listener: 'submission', cfg: { authAllowPlaintext: true } });
  assert.deepEqual(ehloLines(await run(h, `EHLO ${HELO}`)), [
    GREET_LINE,
    ...BASE_KEYWORDS,
    'STARTTLS',
    'AUTH PLAIN LOGIN',
  ]);
});

test('RFC 4954: AUTH is not offered on the smtp listener unless authOnSmtp', async () => {
  const off = harness({ tls: TLS });
  assert.deepEqual(ehloLines(await run(off, `EHLO ${HELO}`)), [GREET_LINE, ...BASE_KEYWORDS]);
  const on = harness({ tls: TLS, cfg: { authOnSmtp: true } });
  assert.deepEqual(ehloLines(await run(on, `EHLO ${HELO}`)), [
    GREET_LINE,
    ...BASE_KEYWORDS,
    'AUTH PLAIN LOGIN',
  ]);
});

test('RFC 4954 4: AUTH is no longer offered after a successful AUTH', async () => {
  const h = await authedSubmission();
  assert.deepEqual(ehloLines(await run(h, `EHLO ${HELO}`)), [GREET_LINE, ...BASE_KEYWORDS]);
});

test('RFC 5321 4.1.1.1: HELO and EHLO without an argument are 501 5.5.2', async () => {
  const h = harness();
  assert.deepEqual(await say(h, 'HELO'), ['501 5.5.2']);
  assert.deepEqual(await say(h, 'EHLO'), ['501 5.5.2']);
  assert.deepEqual(await say(h, 'EHLO  '), ['501 5.5.2']);
  assert.deepEqual(await say(h, 'EHLO two words'), ['501 5.5.2']);
});

test('RFC 5321 4.1.4: EHLO in a transaction resets it, like RSET', async () => {
  const h = harness();
  await ehlo(h);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  await ehlo(h);
  assert.deepEqual(await say(h, 'RCPT TO:<bob@local.test>'), ['503 5.5.1']);
  assert.deepEqual(await say(h, 'DATA'), ['503 5.5.1']);
});

// ---- MAIL ----------------------------------------------------------------------------------

test('RFC 5321 4.1.4: MAIL before HELO/EHLO is 503 5.5.1', async () => {
  const h = harness();
  assert.deepEqual(await say(h, 'MAIL FROM:<x@remote.test>'), ['503 5.5.1']);
});

test('RFC 5321 4.1.4: a nested MAIL is 503 5.5.1', async () => {
  const h = harness();
  await ehlo(h);
  assert.deepEqual(await say(h, 'MAIL FROM:<x@remote.test>'), ['250 2.1.0']);
  assert.deepEqual(await say(h, 'MAIL FROM:<y@remote.test>'), ['503 5.5.1']);
});

test('RFC 6409 4.3 / RFC 4954 6: MAIL on submission without AUTH is 530 5.7.0', async () => {
  for (const listener of ['submission', 'submissions'] as const) {
    const h = harness({ listener, tls: TLS });
    await ehlo(h);
    assert.deepEqual(await say(h, `MAIL FROM:<${USER}>`), ['530 5.7.0'], listener);
  }
});

test('RFC 1870 6: MAIL with a declared SIZE over the limit is 552 5.3.4', async () => {
  const h = harness();
  await ehlo(h);
  assert.deepEqual(await say(h, 'MAIL FROM:<x@remote.test> SIZE=10001'), ['552 5.3.4']);
  assert.deepEqual(await say(h, 'MAIL FROM:<x@remote.test> SIZE=10000'), ['250 2.1.0']);
});

test('RFC 5321 4.1.1.11: an unknown MAIL parameter is 555 5.5.4', async () => {
  const h = harness();
  await ehlo(h);
  const actions = await run(h, 'MAIL FROM:<x@remote.test> FOO=bar');
  assert.deepEqual(theReply(actions), {
    code: 555,
    enhanced: '5.5.4',
    lines: ['Parameter FOO is not recognized or not implemented'],
  });
});

test('RFC 5321 4.1.1.2: MAIL parameters need EHLO (501 5.5.4 after HELO)', async () => {
  const h = harness();
  assert.deepEqual(await say(h, `HELO ${HELO}`), ['250']);
  assert.deepEqual(await say(h, 'MAIL FROM:<x@remote.test> SIZE=10'), ['501 5.5.4']);
  assert.deepEqual(await say(h, 'MAIL FROM:<x@remote.test>'), ['250 2.1.0']);
});

test('RFC 5321 4.1.2: malformed MAIL is 501 (5.5.2 for the path, 5.5.4 for the FROM: keyword or a value)', async () => {
  const h = harness();
  await ehlo(h);
  assert.deepEqual(await say(h, 'MAIL FROM:x@remote.test'), ['501 5.5.2']);
  assert.deepEqual(await say(h, 'MAIL FROM:<x@remote.test'), ['501 5.5.2']);
  assert.deepEqual(await say(h, 'MAIL TO:<x@remote.test>'), ['501 5.5.4']);
  assert.deepEqual(await say(h, 'MAIL <x@remote.test>'), ['501 5.5.4']);
  assert.deepEqual(await say(h, 'MAIL FROM:<x@remote.test> SIZE=big'), ['501 5.5.4']);
  assert.deepEqual(await say(h, 'MAIL FROM:<x@remote.test> BODY=BINARYMIME'), ['501 5.5.4']);
});

test('RFC 5321 4.1.2: a bad sender address is 553 5.1.7', async () => {
  const h = harness();
  await ehlo(h);
  assert.deepEqual(await say(h, 'MAIL FROM:<a..b@remote.test>'), ['553 5.1.7']);
  assert.deepEqual(await say(h, 'MAIL FROM:<nobody>'), ['553 5.1.7']);
  assert.deepEqual(await say(h, 'MAIL FROM:<x@-bad-.test>'), ['553 5.1.7']);
});

test('RFC 6531 3.4: a non-ASCII sender without SMTPUTF8 is 553 5.6.7, accepted with it', async () => {
  const h = harness();
  await ehlo(h);
  assert.deepEqual(await say(h, 'MAIL FROM:<josé@remote.test>'), ['553 5.6.7']);
  assert.deepEqual(await say(h, 'MAIL FROM:<josé@remote.test> SMTPUTF8'), ['250 2.1.0']);
});

test('RFC 5321 4.5.5: the null reverse-path <> is accepted', async () => {
  const h = harness();
  await ehlo(h);
  const actions = await run(h, 'MAIL FROM:<>');
  assert.deepEqual(theReply(actions), { code: 250, enhanced: '2.1.0', lines: ['Sender <> ok'] });
});

test('RFC 1870 / 6152 / 6531 / 3461: MAIL and RCPT parameters are kept in the committed envelope', async () => {
  const h = harness();
  await ehlo(h);
  assert.deepEqual(
    await say(h, 'MAIL FROM:<x@remote.test> SIZE=500 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=abc+2Bdef'),
    ['250 2.1.0'],
  );
  assert.deepEqual(
    await say(h, 'RCPT TO:<alice@local.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice+40local.test'),
    ['250 2.1.5'],
  );
  assert.deepEqual(await say(h, 'RCPT TO:<bob@local.test> NOTIFY=NEVER'), ['250 2.1.5']);
  assert.deepEqual(summary(await data(h, [BODY])), ['250 2.0.0']);
  const env = h.sinks[0]?.committed;
  assert.ok(env);
  assert.deepEqual(env.mailParams, {
    size: 500,
    body: '8BITMIME',
    smtputf8: true,
    ret: 'HDRS',
    envid: 'abc+def',
  });
  assert.deepEqual(env.recipients, [
    {
      address: 'alice@local.test',
      params: { notify: ['SUCCESS', 'FAILURE'], orcpt: { type: 'rfc822', address: 'alice@local.test' } },
    },
    { address: 'bob@local.test', params: { notify: ['NEVER'] } },
  ]);
});

// ---- RCPT ----------------------------------------------------------------------------------

test('RFC 5321 4.1.4: RCPT before MAIL is 503 5.5.1', async () => {
  const h = harness();
  await ehlo(h);
  assert.deepEqual(await say(h, 'RCPT TO:<alice@local.test>'), ['503 5.5.1']);
});

test('RFC 5321 4.1.1.3: RCPT parameters need EHLO (501 5.5.4 after HELO)', async () => {
  const h = harness();
  await say(h, `HELO ${HELO}`);
  assert.deepEqual(await say(h, 'MAIL FROM:<x@remote.test>'), ['250 2.1.0']);
  assert.deepEqual(await say(h, 'RCPT TO:<alice@local.test> NOTIFY=NEVER'), ['501 5.5.4']);
  assert.deepEqual(await say(h, 'RCPT TO:<alice@local.test>'), ['250 2.1.5']);
});

test('RFC 5321 4.1.1.3: bad RCPT syntax is 501, a bad address 553 5.1.3, an unknown parameter 555 5.5.4', async () => {
  const h = harness();
  await ehlo(h);
  await envelope(h, 'x@remote.test', []);
  assert.deepEqual(await say(h, 'RCPT TO:alice@local.test'), ['501 5.5.2']);
  assert.deepEqual(await say(h, 'RCPT FROM:<alice@local.test>'), ['501 5.5.4']);
  assert.deepEqual(await say(h, 'RCPT TO:<>'), ['553 5.1.3']);
  assert.deepEqual(await say(h, 'RCPT TO:<a b@local.test>'), ['553 5.1.3']);
  assert.deepEqual(await say(h, 'RCPT TO:<alice@local.test> FOO'), ['555 5.5.4']);
  assert.deepEqual(await say(h, 'RCPT TO:<josé@local.test>'), ['553 5.6.7']);
});

test('RFC 5321 4.5.3.1.8: the recipient beyond the limit (the 101st) is 452 4.5.3', async () => {
  const names = Array.from({ length: 101 }, (_, i) => `u${i}`);
  const h = harness({ mailboxes: new Set(names) });
  await ehlo(h);
  await envelope(
    h,
    'x@remote.test',
    names.slice(0, 100).map((n) => `${n}@local.test`),
  );
  const actions = await run(h, 'RCPT TO:<u100@local.test>');
  assert.deepEqual(theReply(actions), {
    code: 452,
    enhanced: '4.5.3',
    lines: ['Too many recipients: the limit is 100 per message'],
  });
  // Not a client error: the transaction goes on with the 100.
  assert.deepEqual(summary(await data(h, [BODY])), ['250 2.0.0']);
  assert.equal(h.sinks[0]?.committed?.recipients.length, 100);
});

test('RFC 5321 3.3: a refused RCPT gets the recipient check reply unchanged', async () => {
  const h = harness();
  await ehlo(h);
  await envelope(h, 'x@remote.test', []);
  assert.deepEqual(theReply(await run(h, 'RCPT TO:<nobody@local.test>')), {
    code: 550,
    enhanced: '5.1.1',
    lines: ['Recipient <nobody@local.test> unknown: no such mailbox here'],
  });
  assert.deepEqual(
    theReply(await run(h, 'RCPT TO:<z@elsewhere.test>')),
    reply('RELAY_DENIED', {
      address: 'z@elsewhere.test',
    }),
  );
  const temp = harness({ rejectMode: 'temporary' });
  await ehlo(temp);
  await envelope(temp, 'x@remote.test', []);
  assert.deepEqual(
    theReply(await run(temp, 'RCPT TO:<nobody@local.test>')),
    reply('RECIPIENT_LOOKUP_FAILED'),
  );
});

// ---- DATA ----------------------------------------------------------------------------------

test('RFC 5321 3.3: DATA without a valid recipient is 554 5.5.1', async () => {
  const h = harness();
  await ehlo(h);
  await envelope(h, 'x@remote.test', []);
  assert.deepEqual(await say(h, 'RCPT TO:<nobody@local.test>'), ['550 5.1.1']);
  assert.deepEqual(await say(h, 'DATA'), ['554 5.5.1']);
  assert.equal(h.sinks.length, 0);
});

test('RFC 5321 4.1.4: DATA without MAIL is 503 5.5.1', async () => {
  const h = harness();
  await ehlo(h);
  assert.deepEqual(await say(h, 'DATA'), ['503 5.5.1']);
});

test('RFC 5321 4.1.1.4: DATA is 354, then 250 2.0.0 "Ok: queued as <qid>"; Received first, body bytes exact', async () => {
  const h = harness();
  await ehlo(h);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  const start = await run(h, 'DATA');
  assert.deepEqual(start[0], {
    kind: 'reply',
    reply: { code: 354, lines: ['End data with <CR><LF>.<CR><LF>'] },
  });
  const end = await sendData(h, start, ['Subject: hello\r\n', 'Message-ID: <m1@client.test>\r\n\r\nHi.\r\n']);
  assert.deepEqual(end, [
    { kind: 'reply', reply: { code: 250, enhanced: '2.0.0', lines: ['Ok: queued as Q1'] } },
  ]);
  const sink = h.sinks[0]!;
  assert.equal(
    sink.text,
    received({ protocol: 'ESMTP', forRcpt: 'alice@local.test' }) +
      'Subject: hello\r\nMessage-ID: <m1@client.test>\r\n\r\nHi.\r\n',
  );
  assert.equal(sink.commits, 1);
  assert.equal(sink.aborts, 0);
});

test('RFC 5321 4.4: the Received header names "for <rcpt>" only with one recipient', async () => {
  const h = harness();
  await ehlo(h);
  await envelope(h, 'x@remote.test', ['alice@local.test', 'bob@local.test']);
  await data(h, [BODY]);
  assert.equal(h.sinks[0]!.text, received({ protocol: 'ESMTP' }) + BODY);
});

test('RFC 3848: Received "with" is SMTP after HELO, ESMTPS with TLS, ESMTPSA with TLS and AUTH, ESMTPA with AUTH only', async () => {
  const helo = harness();
  await say(helo, `HELO ${HELO}`);
  await envelope(helo, 'x@remote.test', ['alice@local.test']);
  await data(helo, [BODY]);
  assert.equal(helo.sinks[0]!.text, received({ protocol: 'SMTP', forRcpt: 'alice@local.test' }) + BODY);

  const tls = harness({ tls: TLS });
  await ehlo(tls);
  await envelope(tls, 'x@remote.test', ['alice@local.test']);
  await data(tls, [BODY]);
  assert.equal(
    tls.sinks[0]!.text,
    received({ protocol: 'ESMTPS', tls: true, forRcpt: 'alice@local.test' }) + BODY,
  );

  const sa = await authedSubmission();
  await envelope(sa, USER, ['bob@local.test']);
  await data(sa, [BODY]);
  assert.equal(
    sa.sinks[0]!.text,
    received({ protocol: 'ESMTPSA', tls: true, forRcpt: 'bob@local.test' }) + BODY,
  );

  const a = harness({ listener: 'submission', cfg: { authAllowPlaintext: true } });
  await ehlo(a);
  assert.deepEqual(await say(a, `AUTH PLAIN ${b64(`\0${USER}\0${PASSWORD}`)}`), ['235 2.7.0']);
  await envelope(a, USER, ['bob@local.test']);
  await data(a, [BODY]);
  assert.equal(a.sinks[0]!.text, received({ protocol: 'ESMTPA', forRcpt: 'bob@local.test' }) + BODY);
});

test('RFC 6531 4.3: Received "with" is UTF8SMTPS for an SMTPUTF8 transaction over TLS', async () => {
  const h = harness({ tls: TLS });
  await ehlo(h);
  await envelope(h, 'x@remote.test', ['alice@local.test'], 'SMTPUTF8');
  await data(h, [BODY]);
  assert.equal(
    h.sinks[0]!.text,
    received({ protocol: 'UTF8SMTPS', tls: true, forRcpt: 'alice@local.test' }) + BODY,
  );
});

test('RFC 5321 4.1.1.4: the committed envelope has sender, recipients, client, listener, authUser and TLS', async () => {
  const h = await authedSubmission();
  await envelope(h, USER, ['bob@local.test', 'z@elsewhere.test']);
  await data(h, [BODY]);
  const expected: Envelope = {
    sender: USER,
    mailParams: {},
    recipients: [
      { address: 'bob@local.test', params: {} },
      { address: 'z@elsewhere.test', params: {} },
    ],
    client: { ip: '192.0.2.10', port: 40000, helo: HELO, hostname: 'client.example.test' },
    listener: 'submission',
    authUser: USER,
    tls: TLS,
    receivedAt: NOW,
  };
  assert.deepEqual(h.sinks[0]!.committed, expected);
});

test('RFC 5321 4.1.4: the transaction ends after a queued message; a new MAIL starts the next', async () => {
  const h = harness();
  await ehlo(h);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  await data(h, [BODY]);
  assert.deepEqual(await say(h, 'RCPT TO:<bob@local.test>'), ['503 5.5.1']);
  await envelope(h, 'y@remote.test', ['bob@local.test']);
  const end = await data(h, [BODY]);
  assert.deepEqual(theReply(end).lines, ['Ok: queued as Q2']);
  assert.equal(h.sinks[1]!.committed?.sender, 'y@remote.test');
});

const DATA_ERRORS: readonly [DataError, string, string][] = [
  ['too-big', '552 5.3.4', 'RFC 1870 / RFC 5321 4.5.3.1.7: a message over the size limit'],
  ['bare-lf', '550 5.6.11', 'RFC 5321 2.3.8: a bare LF in the body'],
  ['line-too-long', '550 5.6.0', 'RFC 5321 4.5.3.1.6: a text line over the limit'],
  ['nul', '550 5.6.0', 'RFC 5321 / RFC 6152: a NUL in the body'],
];

for (const [error, expected, rule] of DATA_ERRORS) {
  test(`${rule} is ${expected}: the sink is aborted, nothing committed, the transaction reset`, async () => {
    const h = harness();
    await ehlo(h);
    await envelope(h, 'x@remote.test', ['alice@local.test']);
    const end = await data(h, ['Subject: x\r\n'], error);
    assert.deepEqual(summary(end), [expected]);
    const sink = h.sinks[0]!;
    assert.equal(sink.aborts, 1);
    assert.equal(sink.commits, 0);
    assert.deepEqual(await say(h, 'RCPT TO:<alice@local.test>'), ['503 5.5.1']);
    assert.deepEqual(await say(h, 'MAIL FROM:<x@remote.test>'), ['250 2.1.0']);
  });
}

test('RFC 5321 4.2.5: a commit that fails gets the spool failure reply (452 4.3.1 / 451 4.3.0); the sink is aborted', async () => {
  const full = harness({ commitError: Object.assign(new Error('no space'), { code: 'ENOSPC' }) });
  await ehlo(full);
  await envelope(full, 'x@remote.test', ['alice@local.test']);
  assert.deepEqual(summary(await data(full, [BODY])), ['452 4.3.1']);
  assert.equal(full.sinks[0]!.aborts, 1);
  assert.equal(full.sinks[0]!.committed, null);
  assert.deepEqual(await say(full, 'RCPT TO:<alice@local.test>'), ['503 5.5.1']);

  const broken = harness({ commitError: new Error('EIO') });
  await ehlo(broken);
  await envelope(broken, 'x@remote.test', ['alice@local.test']);
  assert.deepEqual(summary(await data(broken, [BODY])), ['451 4.3.0']);
});

test('RFC 5321 4.2.5: a write error during DATA gets the spool failure reply, nothing committed', async () => {
  const h = harness();
  await ehlo(h);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  const start = await run(h, 'DATA');
  const end = await sendData(h, start, [BODY], null, new Error('EIO'));
  assert.deepEqual(summary(end), ['451 4.3.0']);
  assert.equal(h.sinks[0]!.aborts, 1);
  assert.equal(h.sinks[0]!.commits, 0);
});

test('RFC 5321 4.2.5: a spool that cannot open a message answers DATA with the spool failure reply', async () => {
  const h = harness({ beginError: new Error('EIO') });
  await ehlo(h);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  assert.deepEqual(await say(h, 'DATA'), ['451 4.3.0']);
});

// ---- submission header fixes, loops ---------------------------------------------------------

test('RFC 6409 8.2 / 8.3: submission adds Message-ID and Date when missing', async () => {
  const h = await authedSubmission();
  await envelope(h, USER, ['bob@local.test']);
  await data(h, ['Subject: hi\r\n', '\r\nbody\r\n']);
  assert.equal(
    h.sinks[0]!.text,
    received({ protocol: 'ESMTPSA', tls: true, forRcpt: 'bob@local.test' }) +
      `Message-ID: <Q1@${HOST}>\r\nDate: ${DATE}\r\n` +
      'Subject: hi\r\n\r\nbody\r\n',
  );
});

test('RFC 6409 8.2 / 8.3: submission adds neither when both are present, only the missing one otherwise', async () => {
  const h = await authedSubmission();
  await envelope(h, USER, ['bob@local.test']);
  await data(h, [BODY]);
  assert.equal(
    h.sinks[0]!.text,
    received({ protocol: 'ESMTPSA', tls: true, forRcpt: 'bob@local.test' }) + BODY,
  );

  await envelope(h, USER, ['bob@local.test']);
  await data(h, ['Date: ', DATE, '\r\nSubject: x\r\n\r\nb\r\n']);
  assert.equal(
    h.sinks[1]!.text,
    received({ protocol: 'ESMTPSA', tls: true, qid: 'Q2', forRcpt: 'bob@local.test' }) +
      `Message-ID: <Q2@${HOST}>\r\n` +
      `Date: ${DATE}\r\nSubject: x\r\n\r\nb\r\n`,
  );
});

test('RFC 5321 4.4: the smtp listener never adds Message-ID or Date', async () => {
  const h = harness();
  await ehlo(h);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  await data(h, ['Subject: hi\r\n\r\nbody\r\n']);
  assert.equal(
    h.sinks[0]!.text,
    received({ protocol: 'ESMTP', forRcpt: 'alice@local.test' }) + 'Subject: hi\r\n\r\nbody\r\n',
  );
});

test('RFC 5321 6.3: more Received headers than limits.receivedHeaders is 554 5.4.6, aborted', async () => {
  const body = (n: number): string => `Received: from a by b; ${DATE}\r\n`.repeat(n) + '\r\nloop\r\n';
  const h = harness({ limits: { receivedHeaders: 3 } });
  await ehlo(h);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  const end = await data(h, [body(4)]);
  assert.deepEqual(theReply(end), {
    code: 554,
    enhanced: '5.4.6',
    lines: ['Too many Received headers (4): mail loop suspected'],
  });
  assert.equal(h.sinks[0]!.aborts, 1);
  assert.equal(h.sinks[0]!.committed, null);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  assert.deepEqual(summary(await data(h, [body(3)])), ['250 2.0.0']);
});

// ---- BDAT (RFC 3030) ------------------------------------------------------------------------

test('RFC 3030 2: BDAT chunks are 250 each, BDAT LAST queues the message', async () => {
  const h = harness();
  await ehlo(h);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  const first = await bdat(h, 'Subject: hi\r\n');
  assert.deepEqual(theReply(first), { code: 250, enhanced: '2.0.0', lines: ['Ok: 13 octets received'] });
  const last = await bdat(h, '\r\nbody\r\n', true);
  assert.deepEqual(theReply(last), { code: 250, enhanced: '2.0.0', lines: ['Ok: queued as Q1'] });
  const sink = h.sinks[0]!;
  assert.equal(
    sink.text,
    received({ protocol: 'ESMTP', forRcpt: 'alice@local.test' }) + 'Subject: hi\r\n\r\nbody\r\n',
  );
  assert.equal(sink.commits, 1);
  assert.equal(sink.aborts, 0, 'a committed message must not be aborted');
  assert.deepEqual(sink.committed?.recipients, [{ address: 'alice@local.test', params: {} }]);
});

test('RFC 3030 2: BDAT 0 LAST ends a message', async () => {
  const h = harness();
  await ehlo(h);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  assert.deepEqual(summary(await bdat(h, BODY)), ['250 2.0.0']);
  assert.deepEqual(summary(await bdat(h, '', true)), ['250 2.0.0']);
  assert.equal(h.sinks[0]!.commits, 1);
});

test('RFC 3030 2: BDAT without MAIL still reads the chunk (discarded), then 503 5.5.1', async () => {
  const h = harness();
  await ehlo(h);
  const start = await run(h, 'BDAT 5 LAST');
  assert.deepEqual(start, [{ kind: 'receive-chunk', size: 5, body: null, last: true }]);
  assert.deepEqual(summary(await h.session.handle({ kind: 'chunk-end', error: null })), ['503 5.5.1']);
  assert.equal(h.sinks.length, 0);
});

test('RFC 3030 2: BDAT with no valid recipient reads the chunk, then 554 5.5.1', async () => {
  const h = harness();
  await ehlo(h);
  await envelope(h, 'x@remote.test', []);
  assert.deepEqual(summary(await bdat(h, 'abc', true)), ['554 5.5.1']);
});

test('RFC 3030 2: DATA after BDAT in one transaction is 503 5.5.1, RCPT after BDAT too', async () => {
  const h = harness();
  await ehlo(h);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  assert.deepEqual(summary(await bdat(h, 'Subject: x\r\n')), ['250 2.0.0']);
  assert.deepEqual(await say(h, 'DATA'), ['503 5.5.1']);
  assert.deepEqual(await say(h, 'RCPT TO:<bob@local.test>'), ['503 5.5.1']);
  assert.deepEqual(summary(await bdat(h, '\r\nb\r\n', true)), ['250 2.0.0']);
});

test('RFC 1870 / RFC 3030: BDAT chunks over the size limit are discarded and 552 5.3.4 at chunk end', async () => {
  const h = harness({ limits: { messageBytes: 100 } });
  await ehlo(h);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  assert.deepEqual(summary(await bdat(h, 'x'.repeat(60))), ['250 2.0.0']);
  const start = await run(h, 'BDAT 60 LAST');
  assert.deepEqual(summary(start), ['receive-chunk 60 discard']);
  assert.deepEqual(summary(await sendChunk(h, start, 'y'.repeat(60))), ['552 5.3.4']);
  const sink = h.sinks[0]!;
  assert.equal(sink.commits, 0);
  assert.equal(sink.aborts, 1);
  assert.deepEqual(await say(h, 'RCPT TO:<alice@local.test>'), ['503 5.5.1']);
});

test('RFC 3030 2: RSET in the middle of a BDAT transaction drops the message', async () => {
  const h = harness();
  await ehlo(h);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  await bdat(h, 'Subject: x\r\n');
  assert.deepEqual(await say(h, 'RSET'), ['250 2.0.0']);
  assert.equal(h.sinks[0]!.aborts, 1);
  assert.equal(h.sinks[0]!.commits, 0);
});

test('RFC 3030 2: a malformed BDAT size is 501 5.5.2 and closes (the chunk end is unknown)', async () => {
  for (const args of ['', 'x', '-1', '5 LAST extra', '5 FIRST', '12345678901']) {
    const h = harness();
    await ehlo(h);
    await envelope(h, 'x@remote.test', ['alice@local.test']);
    await bdat(h, 'Subject: x\r\n');
    assert.deepEqual(await say(h, `BDAT ${args}`.trim()), ['501 5.5.2', 'close'], args);
    assert.equal(h.session.closed, true);
    assert.equal(h.sinks[0]!.aborts, 1, 'the open message is dropped');
    assert.deepEqual(await run(h, 'NOOP'), []);
  }
});

test('RFC 3030 2: a BDAT chunk write error gets the spool failure reply and nothing is committed', async () => {
  const h = harness();
  await ehlo(h);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  const start = await run(h, 'BDAT 3 LAST');
  assert.deepEqual(summary(await sendChunk(h, start, 'abc', new Error('EIO'))), ['451 4.3.0']);
  assert.equal(h.sinks[0]!.commits, 0);
  assert.equal(h.sinks[0]!.aborts, 1);
});

test('RFC 3030 / RFC 5321 6.3: a BDAT message with too many Received headers is 554 5.4.6', async () => {
  const h = harness({ limits: { receivedHeaders: 1 } });
  await ehlo(h);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  const end = await bdat(h, 'Received: a\r\nReceived: b\r\n\r\nx\r\n', true);
  assert.deepEqual(summary(end), ['554 5.4.6']);
  assert.equal(h.sinks[0]!.aborts, 1);
  assert.equal(h.sinks[0]!.commits, 0);
});

test('RFC 3030 + DESIGN rule 10: a BDAT body error gets the DATA reply, at the chunk where it is found', async () => {
  const cases: [DataError, string][] = [
    ['bare-lf', '550 5.6.11'],
    ['nul', '550 5.6.0'],
    ['line-too-long', '550 5.6.0'],
    ['too-big', '552 5.3.4'],
  ];
  for (const [error, expected] of cases) {
    for (const last of [true, false]) {
      const h = harness();
      await ehlo(h);
      await envelope(h, 'x@remote.test', ['alice@local.test']);
      assert.deepEqual(summary(await bdat(h, 'Subject: x\r\n')), ['250 2.0.0']);
      const start = await run(h, `BDAT 5${last ? ' LAST' : ''}`);
      const end = await sendChunk(h, start, 'a\nb\r\n', undefined, error);
      const r = theReply(end);
      assert.equal(`${r.code} ${r.enhanced}`, expected, `${error}, last ${last}`);
      // The DATA reply, word for word (one table, one mapping).
      const viaData = harness();
      await ehlo(viaData);
      await envelope(viaData, 'x@remote.test', ['alice@local.test']);
      assert.deepEqual(r, theReply(await data(viaData, ['x\r\n'], error)));
      const sink = h.sinks[0]!;
      assert.equal(sink.commits, 0);
      assert.equal(sink.aborts, 1);
      assert.equal(h.session.receivingChunks, false, 'the transaction is over');
      // RFC 3030 2: the next chunk of that message belongs to no transaction.
      assert.deepEqual(summary(await bdat(h, 'more\r\n', true)), ['503 5.5.1']);
    }
  }
});

test('receivingChunks is true from the first accepted BDAT chunk until the message ends', async () => {
  const h = harness();
  await ehlo(h);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  assert.equal(h.session.receivingChunks, false);
  await bdat(h, 'Subject: x\r\n');
  assert.equal(h.session.receivingChunks, true);
  await bdat(h, '\r\nb\r\n', true);
  assert.equal(h.session.receivingChunks, false);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  await bdat(h, 'Subject: x\r\n');
  await say(h, 'RSET');
  assert.equal(h.session.receivingChunks, false);
});

// ---- other commands -------------------------------------------------------------------------

test('RFC 5321 4.1.1.5: RSET is 250 2.0.0 and clears the transaction', async () => {
  const h = harness();
  await ehlo(h);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  assert.deepEqual(await say(h, 'RSET'), ['250 2.0.0']);
  assert.deepEqual(await say(h, 'DATA'), ['503 5.5.1']);
  assert.deepEqual(await say(h, 'MAIL FROM:<x@remote.test>'), ['250 2.1.0']);
});

test('RFC 5321 4.1.1.9 / 4.1.1.8: NOOP is 250 2.0.0 (with or without a string), HELP 214 2.0.0', async () => {
  const h = harness();
  assert.deepEqual(await say(h, 'NOOP'), ['250 2.0.0']);
  assert.deepEqual(await say(h, 'noop hello there'), ['250 2.0.0']);
  assert.deepEqual(await say(h, 'HELP'), ['214 2.0.0']);
  assert.deepEqual(await say(h, 'HELP MAIL'), ['214 2.0.0']);
});

test('RFC 5321 3.5.3: VRFY in "ambiguous" mode is 252 2.5.2 for any address, never revealing', async () => {
  const h = harness();
  const known = theReply(await run(h, 'VRFY alice@local.test'));
  const unknown = theReply(await run(h, 'VRFY nobody@local.test'));
  assert.deepEqual(known, reply('VRFY_AMBIGUOUS'));
  assert.deepEqual(unknown, known);
  assert.deepEqual(await say(h, 'VRFY'), ['501 5.5.2']);
});

test('RFC 5321 3.5.3: VRFY in "verify" mode is 250 2.1.5 for a mailbox, 550 5.1.1 otherwise', async () => {
  const h = harness({ cfg: { vrfy: 'verify' } });
  assert.deepEqual(theReply(await run(h, 'VRFY <alice@local.test>')), {
    code: 250,
    enhanced: '2.1.5',
    lines: ['<alice@local.test>'],
  });
  assert.deepEqual(await say(h, 'VRFY alice@local.test'), ['250 2.1.5']);
  assert.deepEqual(await say(h, 'VRFY nobody@local.test'), ['550 5.1.1']);
  assert.deepEqual(await say(h, 'VRFY not an address'), ['252 2.5.2']);
});

test('RFC 5321 3.5.3: EXPN is 502 5.5.1', async () => {
  const h = harness();
  assert.deepEqual(await say(h, 'EXPN staff'), ['502 5.5.1']);
});

test('RFC 5321 4.1.1.10: QUIT is 221 2.0.0 and closes; later input is ignored', async () => {
  const h = harness();
  await ehlo(h);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  const actions = await run(h, 'QUIT');
  assert.deepEqual(actions, [
    {
      kind: 'reply',
      reply: { code: 221, enhanced: '2.0.0', lines: [`${HOST} closing connection`], close: true },
    },
    { kind: 'close' },
  ]);
  assert.equal(h.session.closed, true);
  assert.deepEqual(await run(h, 'NOOP'), []);
});

test('RFC 5321 4.2.4: an unknown command is 500 5.5.1', async () => {
  const h = harness();
  assert.deepEqual(await say(h, 'FOO bar'), ['500 5.5.1']);
  assert.deepEqual(await say(h, ''), ['500 5.5.1']);
});

test('HTTP request line ("GET / HTTP/1.1") on the SMTP port is 554 5.7.0 and closes', async () => {
  const h = harness();
  assert.deepEqual(await say(h, 'GET / HTTP/1.1'), ['554 5.7.0', 'close']);
  assert.equal(h.session.closed, true);
  const long = harness();
  assert.deepEqual(await say(long, `GET /${'a'.repeat(600)} HTTP/1.1`), ['554 5.7.0', 'close']);
});

test('RFC 5321 2.3.8 / 4.1: a NUL in a command is 500 5.5.2', async () => {
  const h = harness();
  assert.deepEqual(await say(h, Buffer.from('NOOP\0x', 'latin1')), ['500 5.5.2']);
});

test('RFC 6531 / RFC 3629: a command that is not valid UTF-8 is 501 5.5.2', async () => {
  const h = harness();
  assert.deepEqual(await say(h, Buffer.from([0x4e, 0x4f, 0x4f, 0x50, 0x20, 0xff, 0xfe])), ['501 5.5.2']);
});

test('RFC 5321 4.5.3.1.4: a command line over 512 octets (with CRLF) is 500 5.5.2', async () => {
  const h = harness();
  await ehlo(h);
  assert.deepEqual(await say(h, `NOOP ${'x'.repeat(505)}`), ['250 2.0.0']); // 510 + CRLF = 512
  assert.deepEqual(await say(h, `NOOP ${'x'.repeat(506)}`), ['500 5.5.2']);
  assert.deepEqual(await say(h, `XYZZ ${'x'.repeat(600)}`), ['500 5.5.2']);
  assert.deepEqual(await say(h, `MAIL FROM:<${'a'.repeat(60)}@${'b'.repeat(500)}.test>`), ['500 5.5.2']);
  assert.deepEqual(await h.session.handle({ kind: 'line-too-long' }).then(summary), ['500 5.5.2']);
});

test('RFC 5321 2.3.8: a command ended by a bare LF is 500 5.5.2', async () => {
  const h = harness();
  assert.deepEqual(summary(await h.session.handle({ kind: 'line-bare-lf' })), ['500 5.5.2']);
});

test('RFC 5321 4.1.1: DATA, RSET, QUIT and STARTTLS with arguments are 501 5.5.4', async () => {
  const h = harness();
  await ehlo(h);
  for (const line of ['DATA now', 'RSET all', 'QUIT please', 'STARTTLS x']) {
    assert.deepEqual(await say(h, line), ['501 5.5.4'], line);
  }
  assert.equal(h.session.closed, false);
});

test('RFC 5321 4.3.2 (421): after limits.errors client errors the session answers 421 4.7.0 and closes', async () => {
  const h = harness({ limits: { errors: 3 } });
  await ehlo(h);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  assert.deepEqual(await say(h, 'FOO'), ['500 5.5.1']);
  assert.deepEqual(await say(h, 'RCPT TO:<nobody@local.test>'), ['550 5.1.1']);
  const last = await run(h, 'MAIL FROM:<y@remote.test>');
  assert.deepEqual(summary(last), ['503 5.5.1', '421 4.7.0', 'close']);
  assert.deepEqual(theReply(last.slice(1)), reply('TOO_MANY_ERRORS', { hostname: HOST }));
  assert.equal(h.session.closed, true);
  assert.deepEqual(await run(h, 'NOOP'), []);
});

test('RFC 5321 4.5.3.1.10: temporary refusals (452 4.5.3) do not count as errors', async () => {
  const h = harness({ limits: { errors: 2, recipients: 1 } });
  await ehlo(h);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  for (let i = 0; i < 5; i++) assert.deepEqual(await say(h, 'RCPT TO:<bob@local.test>'), ['452 4.5.3']);
  assert.equal(h.session.closed, false);
});

// ---- STARTTLS (RFC 3207) --------------------------------------------------------------------

test('RFC 3207 4: STARTTLS is 220 2.0.0 and a start-tls action', async () => {
  const h = harness();
  await ehlo(h);
  assert.deepEqual(await run(h, 'STARTTLS'), [
    { kind: 'reply', reply: { code: 220, enhanced: '2.0.0', lines: ['Ready to start TLS'] } },
    { kind: 'start-tls' },
  ]);
});

test('RFC 3207 4.2: after the handshake the session forgets EHLO: MAIL without a new EHLO is 503 5.5.1', async () => {
  const h = harness();
  await ehlo(h);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  await run(h, 'STARTTLS');
  assert.deepEqual(await h.session.handle({ kind: 'tls-started', tls: TLS }), []);
  assert.deepEqual(await say(h, 'MAIL FROM:<x@remote.test>'), ['503 5.5.1']);
  assert.deepEqual(ehloLines(await run(h, `EHLO ${HELO}`)), [GREET_LINE, ...BASE_KEYWORDS]);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  await data(h, [BODY]);
  assert.deepEqual(h.sinks[0]!.committed?.tls, TLS);
});

test('RFC 3207 4.2: AUTH learnt before TLS is forgotten after the handshake', async () => {
  const h = harness({ listener: 'submission', cfg: { authAllowPlaintext: true } });
  await ehlo(h);
  assert.deepEqual(await say(h, `AUTH PLAIN ${b64(`\0${USER}\0${PASSWORD}`)}`), ['235 2.7.0']);
  await run(h, 'STARTTLS');
  await h.session.handle({ kind: 'tls-started', tls: TLS });
  assert.equal(h.session.authUser, undefined);
  await ehlo(h);
  assert.deepEqual(await say(h, `MAIL FROM:<${USER}>`), ['530 5.7.0']);
});

test('RFC 3207 4: STARTTLS with TLS already active is 503 5.5.1', async () => {
  const h = harness({ tls: TLS });
  await ehlo(h);
  assert.deepEqual(await say(h, 'STARTTLS'), ['503 5.5.1']);
});

test('RFC 3207 4: STARTTLS without a certificate is 454 4.7.0', async () => {
  const h = harness({ cfg: { tlsAvailable: false } });
  await ehlo(h);
  assert.deepEqual(await say(h, 'STARTTLS'), ['454 4.7.0']);
});

// ---- AUTH (RFC 4954) ------------------------------------------------------------------------

test('RFC 4954 4 / RFC 4616: AUTH PLAIN with an initial response, good credentials: 235 2.7.0', async () => {
  const h = harness({ listener: 'submission', tls: TLS });
  await ehlo(h);
  const actions = await run(h, `AUTH PLAIN ${b64(`\0${USER}\0${PASSWORD}`)}`);
  assert.deepEqual(actions, [
    { kind: 'reply', reply: { code: 235, enhanced: '2.7.0', lines: ['Authentication successful'] } },
  ]);
  assert.equal(h.session.authUser, USER);
  assert.deepEqual(h.credentials, [{ kind: 'password', authcid: USER, authzid: '', password: PASSWORD }]);
});

test('RFC 4954 4: AUTH PLAIN without an initial response gets an empty 334 challenge', async () => {
  const h = harness({ listener: 'submission', tls: TLS });
  await ehlo(h);
  assert.deepEqual(await run(h, 'AUTH PLAIN'), [{ kind: 'reply', reply: { code: 334, lines: [''] } }]);
  assert.deepEqual(await say(h, b64(`\0${USER}\0${PASSWORD}`)), ['235 2.7.0']);
  assert.equal(h.session.authUser, USER);
});

test('AUTH LOGIN: two 334 challenges (Username:, Password:), then 235 2.7.0', async () => {
  const h = harness({ listener: 'submission', tls: TLS });
  await ehlo(h);
  assert.deepEqual(await run(h, 'AUTH LOGIN'), [
    { kind: 'reply', reply: { code: 334, lines: [b64('Username:')] } },
  ]);
  assert.deepEqual(await run(h, b64(USER)), [
    { kind: 'reply', reply: { code: 334, lines: [b64('Password:')] } },
  ]);
  assert.deepEqual(await say(h, b64(PASSWORD)), ['235 2.7.0']);
  assert.equal(h.session.authUser, USER);
});

test('RFC 2195: AUTH CRAM-MD5 (when configured) challenges with <nonce.time@host> and accepts the digest', async () => {
  const h = harness({ listener: 'submission', tls: TLS, cfg: { authMechanisms: ['PLAIN', 'CRAM-MD5'] } });
  await ehlo(h);
  const challenge = `<${NONCE}.${NOW}@${HOST}>`;
  assert.deepEqual(await run(h, 'AUTH CRAM-MD5'), [
    { kind: 'reply', reply: { code: 334, lines: [b64(challenge)] } },
  ]);
  const digest = createHmac('md5', PASSWORD).update(challenge).digest('hex');
  assert.deepEqual(await say(h, b64(`${USER} ${digest}`)), ['235 2.7.0']);
  assert.equal(h.session.authUser, USER);
});

test('RFC 4954 4: CRAM-MD5 when not configured is 504 5.5.4', async () => {
  const h = harness({ listener: 'submission', tls: TLS });
  await ehlo(h);
  assert.deepEqual(await say(h, 'AUTH CRAM-MD5'), ['504 5.5.4']);
});

test('RFC 4954 6: a check that cannot be made is 454 4.7.0, not an error of the client; the session goes on', async () => {
  const h = harness({ listener: 'submission', tls: TLS, hookError: new Error('users file unreadable') });
  await ehlo(h);
  const r = theReply(await run(h, `AUTH PLAIN ${b64(`\0${USER}\0${PASSWORD}`)}`));
  assert.deepEqual(r, {
    code: 454,
    enhanced: '4.7.0',
    lines: ['Temporary authentication failure; try again later'],
  });
  assert.equal(h.session.authUser, undefined);
  assert.deepEqual(await say(h, 'NOOP'), ['250 2.0.0']);
});

test('RFC 5321 4.2.5: a recipient lookup that fails is 451 4.3.0 for that RCPT; the transaction goes on', async () => {
  const h = harness({ hookError: new Error('table unreadable') });
  await ehlo(h);
  assert.deepEqual(await say(h, 'MAIL FROM:<x@remote.test>'), ['250 2.1.0']);
  const r = theReply(await run(h, 'RCPT TO:<alice@local.test>'));
  assert.deepEqual(r, {
    code: 451,
    enhanced: '4.3.0',
    lines: ['Temporary failure looking up the recipient; try again later'],
  });
  assert.deepEqual(await say(h, 'DATA'), ['554 5.5.1']);
});

test('RFC 4954 6: bad credentials: a delay action, then 535 5.7.8; not authenticated', async () => {
  const h = harness({ listener: 'submission', tls: TLS });
  await ehlo(h);
  assert.deepEqual(await say(h, `AUTH PLAIN ${b64(`\0${USER}\0wrong`)}`), ['delay 250', '535 5.7.8']);
  assert.equal(h.session.authUser, undefined);
  // Back in command mode, and a retry works.
  assert.deepEqual(await say(h, `AUTH PLAIN ${b64(`\0${USER}\0${PASSWORD}`)}`), ['235 2.7.0']);
});

test('RFC 4954 6: bad credentials without a configured delay: 535 5.7.8 only', async () => {
  const h = harness({ listener: 'submission', tls: TLS, authDelayMs: 0 });
  await ehlo(h);
  await run(h, 'AUTH LOGIN');
  await run(h, b64(USER));
  assert.deepEqual(await say(h, b64('nope')), ['535 5.7.8']);
});

test('RFC 4954 4: "*" cancels the exchange with 501 5.0.0', async () => {
  const h = harness({ listener: 'submission', tls: TLS });
  await ehlo(h);
  await run(h, 'AUTH LOGIN');
  assert.deepEqual(await say(h, '*'), ['501 5.0.0']);
  assert.deepEqual(await say(h, 'NOOP'), ['250 2.0.0']);
  assert.deepEqual(await say(h, 'AUTH PLAIN *'), ['501 5.0.0']);
});

test('RFC 4954 4: a response that is not base64 is 501 5.5.2', async () => {
  const h = harness({ listener: 'submission', tls: TLS });
  await ehlo(h);
  assert.deepEqual(await say(h, 'AUTH PLAIN !!!!'), ['501 5.5.2']);
  await run(h, 'AUTH PLAIN');
  assert.deepEqual(await say(h, 'not base64'), ['501 5.5.2']);
  assert.deepEqual(h.credentials, []);
});

test('RFC 4954 4: AUTH without a mechanism is 501 5.5.2', async () => {
  const h = harness({ listener: 'submission', tls: TLS });
  await ehlo(h);
  assert.deepEqual(await say(h, 'AUTH'), ['501 5.5.2']);
  assert.deepEqual(await say(h, 'AUTH PLAIN a b'), ['501 5.5.2']);
});

test('RFC 4954 6: AUTH before TLS on submission is 538 5.7.11', async () => {
  const h = harness({ listener: 'submission' });
  await ehlo(h);
  assert.deepEqual(await say(h, `AUTH PLAIN ${b64(`\0${USER}\0${PASSWORD}`)}`), ['538 5.7.11']);
  assert.deepEqual(h.credentials, []);
});

test('RFC 4954 4: a second AUTH after success is 503 5.5.1', async () => {
  const h = await authedSubmission();
  assert.deepEqual(await say(h, `AUTH PLAIN ${b64(`\0${USER}\0${PASSWORD}`)}`), ['503 5.5.1']);
});

test('RFC 4954 4: AUTH during a mail transaction is 503 5.5.1', async () => {
  const h = harness({ tls: TLS, cfg: { authOnSmtp: true } });
  await ehlo(h);
  await envelope(h, 'x@remote.test', []);
  assert.deepEqual(await say(h, `AUTH PLAIN ${b64(`\0${USER}\0${PASSWORD}`)}`), ['503 5.5.1']);
});

test('RFC 4954 4: AUTH needs EHLO first (503 5.5.1 before EHLO and after HELO)', async () => {
  const h = harness({ listener: 'submission', tls: TLS });
  assert.deepEqual(await say(h, 'AUTH PLAIN'), ['503 5.5.1']);
  await say(h, `HELO ${HELO}`);
  assert.deepEqual(await say(h, 'AUTH PLAIN'), ['503 5.5.1']);
});

test('RFC 4954 4: an unknown mechanism is 504 5.5.4', async () => {
  const h = harness({ listener: 'submission', tls: TLS });
  await ehlo(h);
  const actions = await run(h, 'AUTH GSSAPI');
  assert.deepEqual(theReply(actions), {
    code: 504,
    enhanced: '5.5.4',
    lines: ['Unrecognized authentication mechanism; available: PLAIN LOGIN'],
  });
});

test('RFC 4954 6: AUTH from a locked-out address is 454 4.7.0, without asking for credentials', async () => {
  const h = harness({ listener: 'submission', tls: TLS, lockedOut: true });
  await ehlo(h);
  assert.deepEqual(await say(h, `AUTH PLAIN ${b64(`\0${USER}\0${PASSWORD}`)}`), ['454 4.7.0']);
  assert.deepEqual(h.credentials, []);
  assert.deepEqual(await say(h, 'NOOP'), ['250 2.0.0']);
});

test('RFC 4954: AUTH on the smtp listener without authOnSmtp is 503 5.5.1', async () => {
  const h = harness({ tls: TLS });
  await ehlo(h);
  assert.deepEqual(
    theReply(await run(h, `AUTH PLAIN ${b64(`\0${USER}\0${PASSWORD}`)}`)),
    reply('AUTH_NOT_AVAILABLE'),
  );
  const on = harness({ tls: TLS, cfg: { authOnSmtp: true } });
  await ehlo(on);
  assert.deepEqual(await say(on, `AUTH PLAIN ${b64(`\0${USER}\0${PASSWORD}`)}`), ['235 2.7.0']);
});

test('RFC 6409 6.1: an authenticated user may not use a sender it does not own (553 5.7.1)', async () => {
  const h = await authedSubmission();
  const actions = await run(h, 'MAIL FROM:<bob@local.test>');
  assert.deepEqual(theReply(actions), {
    code: 553,
    enhanced: '5.7.1',
    lines: [`Sender address <bob@local.test> is not owned by the authenticated user ${USER}`],
  });
  assert.deepEqual(await say(h, `MAIL FROM:<${USER}>`), ['250 2.1.0']);
  assert.deepEqual(await say(h, 'RSET'), ['250 2.0.0']);
  assert.deepEqual(await say(h, 'MAIL FROM:<>'), ['250 2.1.0']);
});

test('RFC 6409 6.1: with enforceSender off, any sender is allowed after AUTH', async () => {
  const h = await authedSubmission({ cfg: { enforceSender: false } });
  assert.deepEqual(await say(h, 'MAIL FROM:<bob@local.test>'), ['250 2.1.0']);
});

test('RFC 4954 / RFC 6409: an authenticated user may relay to other domains', async () => {
  const h = await authedSubmission();
  await envelope(h, USER, ['someone@elsewhere.test']);
  assert.deepEqual(summary(await data(h, [BODY])), ['250 2.0.0']);
});

test('abort() drops a half-received DATA message and closes the session', async () => {
  const h = harness();
  await ehlo(h);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  const start = await run(h, 'DATA');
  const rd = start.find((a) => a.kind === 'receive-data');
  assert.ok(rd?.body);
  await rd.body.write(Buffer.from('Subject: x\r\n'));
  h.session.abort();
  assert.equal(h.sinks[0]!.aborts, 1);
  assert.equal(h.sinks[0]!.commits, 0);
  assert.equal(h.session.closed, true);
  assert.deepEqual(await h.session.handle({ kind: 'data-end', error: null }), []);
});

/** The 'transaction abandoned' events a harness recorded. */
function abandoned(h: Harness): Record<string, unknown>[] {
  return h.events.filter((e) => e.name === 'transaction abandoned').map((e) => e.fields);
}

test('log: a transaction the client leaves after RCPT is reported once at abort(), with its sender and recipients', async () => {
  const h = harness();
  await ehlo(h);
  await envelope(h, 'x@remote.test', ['alice@local.test', 'bob@local.test']);
  h.session.abort();
  h.session.abort();
  assert.deepEqual(abandoned(h), [
    { stage: 'RCPT', sender: 'x@remote.test', rcpts: ['alice@local.test', 'bob@local.test'] },
  ]);
});

test('log: the stage of an abandoned transaction: MAIL only, inside DATA, inside BDAT; the null sender', async () => {
  const afterMail = harness();
  await ehlo(afterMail);
  assert.deepEqual(await say(afterMail, 'MAIL FROM:<>'), ['250 2.1.0']);
  afterMail.session.abort();
  assert.deepEqual(abandoned(afterMail), [{ stage: 'MAIL', sender: '', rcpts: [] }]);

  const inData = harness();
  await ehlo(inData);
  await envelope(inData, 'x@remote.test', ['alice@local.test']);
  assert.deepEqual(summary(await run(inData, 'DATA')), ['354', 'receive-data']);
  inData.session.abort();
  assert.deepEqual(abandoned(inData), [
    { stage: 'DATA', sender: 'x@remote.test', rcpts: ['alice@local.test'] },
  ]);

  const inBdat = harness();
  await ehlo(inBdat);
  await envelope(inBdat, 'x@remote.test', ['alice@local.test']);
  assert.deepEqual(summary(await bdat(inBdat, 'Subject: x\r\n')), ['250 2.0.0']);
  inBdat.session.abort();
  assert.deepEqual(abandoned(inBdat), [
    { stage: 'BDAT', sender: 'x@remote.test', rcpts: ['alice@local.test'] },
  ]);
});

test('log: no abandoned transaction after a message was accepted, after RSET, or without MAIL', async () => {
  const h = harness();
  await ehlo(h);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  assert.deepEqual(summary(await data(h, [BODY])), ['250 2.0.0']);
  assert.deepEqual(await say(h, 'RSET'), ['250 2.0.0']);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  assert.deepEqual(await say(h, 'RSET'), ['250 2.0.0']);
  h.session.abort();
  assert.deepEqual(abandoned(h), []);
  const idle = harness();
  await ehlo(idle);
  idle.session.abort();
  assert.deepEqual(abandoned(idle), []);
});

test('RFC 5321 4.4 / RFC 5322 3.6.7: a hostile HELO name cannot break the Received header', async () => {
  const h = harness();
  assert.deepEqual(await say(h, 'EHLO "evil;(x)<y>'), ['250']);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  await data(h, [BODY]);
  assert.equal(
    h.sinks[0]!.text,
    received({ protocol: 'ESMTP', forRcpt: 'alice@local.test' }).replace(HELO, '?evil??x??y?') + BODY,
  );
});

test('RFC 3030 2: a spool that cannot open a BDAT message answers 451 4.3.0, not counted as a client error', async () => {
  const h = harness({ beginError: new Error('EIO'), limits: { errors: 1 } });
  await ehlo(h);
  await envelope(h, 'x@remote.test', ['alice@local.test']);
  const start = await run(h, 'BDAT 3 LAST');
  assert.deepEqual(summary(start), ['receive-chunk 3 discard']);
  assert.deepEqual(summary(await sendChunk(h, start, 'abc')), ['451 4.3.0']);
  assert.equal(h.session.closed, false);
});
