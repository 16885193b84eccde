/**
 * Shared pieces of the outbound end-to-end tests (test/outbound-*.test.ts): submitting one
 * message through Sterna's smtp listener as a trusted-network client (RFC 5321 3.3 transaction,
 * RFC 5321 4.5.2 dot-stuffing), polling until a condition holds, reading a live message's
 * recipient states from the spool, and the [relay] / [dns] / [outbound] TOML every such test
 * starts from. Trust: test code only; it talks to 127.0.0.1 and never runs in Sterna.
 */
import assert from 'node:assert/strict';
import { runQueueCommand } from '../../src/cli/queue-command.js';
import type { Config } from '../../src/config/schema.js';
import type { RecipientState } from '../../src/message/envelope.js';
import { runInProcess } from './run-cli.js';
import { TestClient } from './smtp-client.js';
import type { TestServer } from './server.js';

/** One message to submit with {@link sendMessage}. */
export interface OutboundMessage {
  /** The reverse path without angle brackets; '' is the null sender <>. */
  from: string;
  /** Forward paths without angle brackets, one RCPT TO each, in this order. */
  to: string[];
  /**
   * The message as it should arrive, ending in CRLF (or empty); not yet dot-stuffed. A string is
   * sent as UTF-8, a Buffer as is.
   */
  body: string | Buffer;
  /** Appended to every MAIL FROM:<...>, with its leading space (e.g. ' BODY=8BITMIME'). */
  mailParams?: string;
  /** Appended to every RCPT TO:<...>, with its leading space (e.g. ' NOTIFY=NEVER'). */
  rcptParams?: string;
  /** The EHLO name; default 'client.test' (what the Received header assertions expect). */
  helo?: string;
}

/**
 * RFC 5321 4.5.2 transparency: a line that starts with "." gets one more "." in front. Works
 * on the octets (latin1 maps each byte to one char and back), so 8-bit and UTF-8 bodies are
 * otherwise sent unchanged. Lines end in CRLF, the only line end SMTP knows.
 */
export function dotStuff(body: string | Buffer): Buffer {
  const octets = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  return Buffer.from(octets.toString('latin1').replace(/(^|\r\n)\./g, '$1..'), 'latin1');
}

/**
 * Submits `m` on the smtp listener at 127.0.0.1:`port` (the test config makes 127.0.0.1 a
 * trusted network, so remote recipients are relayed): EHLO, MAIL FROM, RCPT TO for each
 * recipient, DATA, the dot-stuffed body and ".", then QUIT. Every reply must be the success
 * code (250, 354 for DATA, 250 2.0.0 at the end); a failed assertion carries the reply text.
 * Returns the queue id from the final "queued as ID". The sink un-stuffs the body again, so
 * what it records is `m.body` behind Sterna's Received header.
 */
export async function sendMessage(port: number, m: OutboundMessage): Promise<string> {
  const octets = typeof m.body === 'string' ? Buffer.from(m.body, 'utf8') : m.body;
  assert.ok(
    octets.length === 0 || octets.subarray(-2).toString('latin1') === '\r\n',
    'sendMessage: the body must end in CRLF',
  );
  const c = await TestClient.connect(port);
  try {
    await c.expect(220);
    const ehlo = await c.cmd(`EHLO ${m.helo ?? 'client.test'}`);
    assert.equal(ehlo.code, 250, ehlo.text);
    const mail = await c.cmd(`MAIL FROM:<${m.from}>${m.mailParams ?? ''}`);
    assert.equal(mail.code, 250, mail.text);
    for (const rcpt of m.to) {
      const r = await c.cmd(`RCPT TO:<${rcpt}>${m.rcptParams ?? ''}`);
      assert.equal(r.code, 250, r.text);
    }
    const data = await c.cmd('DATA');
    assert.equal(data.code, 354, data.text);
    c.send(Buffer.concat([dotStuff(octets), Buffer.from('.\r\n')]));
    const queued = await c.expect(250, '2.0.0');
    await c.cmd('QUIT');
    const qid = /queued as (\S+)/.exec(queued.text)?.[1];
    assert.ok(qid !== undefined, queued.text);
    return qid;
  } finally {
    c.close();
  }
}

/**
 * Polls `check` every 20 ms until it returns true; fails the test after `timeoutMs` with
 * "timed out waiting for <what>". `what` may be a function, evaluated only on timeout, to show
 * the state at that moment.
 */
export async function waitFor(
  what: string | (() => string),
  check: () => boolean | Promise<boolean>,
  timeoutMs = 8000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) {
      assert.fail(`timed out waiting for ${typeof what === 'string' ? what : what()}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The recipient states of message `qid` while it is live, or null once it is finished (gone from the spool). */
export function liveStates(server: TestServer, qid: string): RecipientState[] | null {
  return server.app.spool.list().find((m) => m.qid === qid)?.states ?? null;
}

/** Waits until message `qid` has left the spool: every recipient delivered or failed. */
export async function waitGone(server: TestServer, qid: string, timeoutMs = 8000): Promise<void> {
  await waitFor(`message ${qid} to finish`, () => liveStates(server, qid) === null, timeoutMs);
}

/**
 * Short [outbound] timeouts for tests: a peer that hangs fails the attempt in seconds, not minutes
 * (the defaults follow RFC 5321 4.5.3.2).
 */
export const TEST_OUTBOUND_TIMEOUTS = {
  connect_timeout_ms: 2000,
  greeting_timeout_ms: 5000,
  command_timeout_ms: 5000,
  data_end_timeout_ms: 5000,
} as const;

/**
 * The TOML every outbound test starts from: 127.0.0.1 (the test client) is a trusted network,
 * DNS goes only to the test's own server at 127.0.0.1:`dnsPort` (one try, 500 ms), and the
 * [outbound] table holds exactly `outbound` (strings are quoted). More tables may follow it.
 */
export function outboundToml(o: { dnsPort: number; outbound: Record<string, string | number> }): string {
  const keys = Object.entries(o.outbound).map(
    ([k, v]) => `${k} = ${typeof v === 'string' ? JSON.stringify(v) : String(v)}`,
  );
  return `[relay]
trusted_networks = ["127.0.0.1/32"]
[dns]
servers = ["127.0.0.1:${o.dnsPort}"]
timeout_ms = 500
tries = 1
[outbound]
${keys.join('\n')}
`;
}

/**
 * Runs `sterna queue ARGS` in this process against `config` (the running test server answers on
 * its control socket); returns the exit code and what was written to stdout and stderr.
 */
export async function queueCommand(
  config: Config,
  ...args: string[]
): Promise<{ code: number; out: string; err: string }> {
  const r = await runInProcess((io) => runQueueCommand(args, { ...io, config }));
  return { code: r.code, out: r.stdout, err: r.stderr };
}
