/**
 * Shared steps of the policy tests (test/policy-*.test.ts): a client from a chosen loopback
 * address (127.0.0.5 ... act as other hosts), and a check that a refused message left nothing
 * in the spool. Trust: test code only.
 */
import assert from 'node:assert/strict';
import type { TestServer } from './server.js';
import { TestClient } from './smtp-client.js';

/** Connects to the smtp listener from `from`, reads the greeting, sends EHLO. */
export async function clientFrom(
  server: TestServer,
  from: string,
  helo = 'client.example',
): Promise<TestClient> {
  const c = await greetedFrom(server, from);
  await c.cmd(`EHLO ${helo}`).then((r) => assert.equal(r.code, 250, r.text));
  return c;
}

/** Connects from `from` and reads the greeting only. */
export async function greetedFrom(server: TestServer, from: string): Promise<TestClient> {
  const c = await TestClient.connect(server.ports.smtp, { localAddress: from });
  await c.expect(220);
  return c;
}

/** Nothing was queued: the spool holds no message. */
export function assertNothingStored(server: TestServer): void {
  assert.deepEqual(
    server.app.spool.list().map((m) => m.qid),
    [],
    'a refused message must leave nothing in the spool',
  );
}

/** A whole message on an open session after EHLO: MAIL, RCPT, DATA; returns the final reply code. */
export async function sendSimple(c: TestClient, from: string, to: string): Promise<number> {
  const mail = await c.cmd(`MAIL FROM:<${from}>`);
  if (mail.code !== 250) return mail.code;
  const rcpt = await c.cmd(`RCPT TO:<${to}>`);
  if (rcpt.code !== 250) {
    await c.cmd('RSET');
    return rcpt.code;
  }
  await c.cmd('DATA').then((r) => assert.equal(r.code, 354));
  const end = await c.cmd(`From: <${from}>\r\nTo: <${to}>\r\nSubject: policy test\r\n\r\nhello\r\n.`);
  return end.code;
}
