/**
 * Greylisting ([greylist], src/policy/greylist.ts). With an injected clock: a new triplet is
 * deferred for the delay, passes after it within the retry window, then passes at once; the
 * client network is the /24 (IPv4) or /64 (IPv6); a network that passed N times is trusted;
 * a retry after the window starts again. On a real server, in real time (short delay): 451
 * 4.7.1 with a retry hint and nothing stored, the state survives a restart, and allow-listed
 * clients are not greylisted.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Greylist, greylistNetwork } from '../src/policy/greylist.js';
import { MemoryStore } from '../src/state/memory.js';
import { assertNothingStored, clientFrom, sendSimple } from './helpers/policy.js';
import { dataDirsWithCert, startTestServer } from './helpers/server.js';
import { assertReply } from './helpers/smtp-client.js';

const MIN = 60_000;

test('greylisting with an injected clock: defer, pass after the delay, remember, trust the network', async () => {
  let clock = 1_800_000_000_000;
  const store = await MemoryStore.open({ file: null, now: () => clock });
  const g = new Greylist({
    delayMs: 5 * MIN,
    retryWindowMs: 4 * 60 * MIN,
    passTtlMs: 36 * 24 * 60 * MIN,
    trustAfter: 2,
    trustMs: 7 * 24 * 60 * MIN,
    ipv4Prefix: 24,
    ipv6Prefix: 64,
    store,
    now: () => clock,
  });
  /** The verdict for (ip, sender, rcpt), as "defer <minutes> first|retry" or "pass <why>". */
  const verdict = async (ip: string, sender: string, rcpt = 'bob@sterna.test'): Promise<string> => {
    const v = await g.check(ip, sender, rcpt);
    return v.kind === 'pass' ? `pass ${v.why}` : `defer ${v.retryInMs / MIN} ${v.first ? 'first' : 'retry'}`;
  };
  try {
    assert.equal(await verdict('192.0.2.1', 'a@example.org'), 'defer 5 first');
    clock += 2 * MIN;
    assert.equal(await verdict('192.0.2.1', 'a@example.org'), 'defer 3 retry');
    clock += 3 * MIN;
    // Another address of the same /24 (a sender's pool) retries: it passes.
    assert.equal(await verdict('192.0.2.77', 'A@example.org'), 'pass retried');
    clock += 24 * 60 * MIN;
    assert.equal(await verdict('192.0.2.1', 'a@example.org'), 'pass known');
    // Another triplet from the same network: deferred; a retry after the window starts again.
    assert.equal(await verdict('192.0.2.1', 'c@example.org'), 'defer 5 first');
    clock += 5 * 60 * MIN;
    assert.equal(await verdict('192.0.2.1', 'c@example.org'), 'defer 5 first');
    clock += 5 * MIN;
    assert.equal(await verdict('192.0.2.1', 'c@example.org'), 'pass retried');
    // Two passes: the network is trusted, a new triplet passes at once.
    assert.equal(
      await verdict('192.0.2.200', 'new@example.net', 'carol@sterna.test'),
      'pass trusted-network',
    );
    assert.equal(await verdict('198.51.100.1', 'new@example.net', 'carol@sterna.test'), 'defer 5 first');
  } finally {
    await store.close();
  }
  assert.equal(greylistNetwork('192.0.2.77', 24, 64), '192.0.2.0/24');
  assert.equal(greylistNetwork('::ffff:192.0.2.77', 24, 64), '192.0.2.0/24');
  assert.equal(greylistNetwork('2001:db8:1:2:3:4:5:6', 24, 64), '2001:db8:1:2::/64');
  assert.equal(greylistNetwork('2001:db8:1:2:3:4:5:6', 24, 56), '2001:db8:1::/56');
});

test('greylisting on a real server, in real time: 451 4.7.1 with a hint, nothing stored, kept across a restart', async () => {
  const [dataDir] = await dataDirsWithCert(1);
  const toml = `
[greylist]
enabled = true
delay_ms = 1500

[[lists]]
name = "friends"
match = "client"
action = "allow"
entries = ["127.0.0.8"]
`;
  let server = await startTestServer({ dataDir: dataDir!, toml });
  try {
    const c = await clientFrom(server, '127.0.0.5');
    assertReply(await c.cmd('MAIL FROM:<news@example.org>'), 250);
    const firstAttempt = Date.now();
    const r = await c.cmd('RCPT TO:<postmaster@sterna.test>');
    assertReply(r, 451, '4.7.1');
    assert.match(r.text, /^4\.7\.1 Greylisted: .*please try again in [12] seconds$/);
    assertReply(await c.cmd('RCPT TO:<postmaster@sterna.test>'), 451, '4.7.1');
    assertReply(await c.cmd('DATA'), 554, '5.5.1');
    c.close();
    assertNothingStored(server);
    // An allow-listed client is not greylisted.
    const friend = await clientFrom(server, '127.0.0.8');
    assert.equal(await sendSimple(friend, 'news@example.org', 'postmaster@sterna.test'), 250);
    friend.close();

    await server.stop();
    server = await startTestServer({ dataDir: dataDir!, toml });
    // After the restart the first attempt is still known: once the delay has passed, it passes.
    const again = await clientFrom(server, '127.0.0.5');
    // No retry since the first attempt: once the delay is over, the first try after the restart
    // passes, which it could not if the first attempt had been forgotten.
    const wait = firstAttempt + 1600 - Date.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    assert.equal(await sendSimple(again, 'news@example.org', 'postmaster@sterna.test'), 250);
    again.close();
  } finally {
    await server.stop({ remove: true });
  }
});
