import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { buildRelays, parseLmtpTransport } from './relays.js';
import { parseRelayHost } from './remote.js';

test('relay host forms: host, host:port, [address]:port, IPv6 in brackets; port 25 by default', () => {
  assert.deepEqual(parseRelayHost('smtp.example.net'), { host: 'smtp.example.net', port: 25 });
  assert.deepEqual(parseRelayHost('smtp.example.net:587'), { host: 'smtp.example.net', port: 587 });
  assert.deepEqual(parseRelayHost('[127.0.0.2]:2525'), { host: '127.0.0.2', port: 2525 });
  assert.deepEqual(parseRelayHost('[smtp.example.net]'), { host: 'smtp.example.net', port: 25 });
  assert.deepEqual(parseRelayHost('[2001:db8::25]:587'), { host: '2001:db8::25', port: 587 });
  assert.deepEqual(parseRelayHost('[IPv6:2001:db8::25]:587'), { host: '2001:db8::25', port: 587 });
  assert.equal(parseRelayHost('host:0'), null);
  assert.equal(parseRelayHost('host:65536'), null);
  assert.equal(parseRelayHost('host:port'), null);
  assert.equal(parseRelayHost('2001:db8::25'), null);
  assert.equal(parseRelayHost(''), null);
});

test('relay routes: string transports skipped, default TLS policy, password file read at each attempt', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-relays-'));
  try {
    const pw = path.join(dir, 'pw');
    await writeFile(pw, 'first secret\nignored line\n');
    const relays = buildRelays(
      {
        'local.test': 'local',
        'Example.COM': {
          relay: '[192.0.2.25]:2525',
          implicit_tls: false,
          auth_user: 'u',
          auth_password_file: pw,
        },
        'smtps.test': {
          relay: 'smtp.provider.net:465',
          implicit_tls: true,
          auth_user: 'w',
          auth_password: 'inline',
        },
        '*': {
          relay: 'smtp.provider.net:465',
          tls: 'required-verify',
          implicit_tls: true,
          auth_user: 'v',
          auth_password: 'inline',
        },
      },
      'opportunistic',
    );
    assert.deepEqual([...relays.keys()], ['example.com', 'smtps.test', '*']);
    // Implicit TLS with credentials verifies the certificate unless the entry opts out.
    assert.equal(relays.get('smtps.test')?.tls, 'required-verify');
    assert.equal(relays.get('smtps.test')?.authOverUnverifiedTls, false);
    const ex = relays.get('example.com');
    assert.equal(ex?.host, '192.0.2.25');
    assert.equal(ex?.port, 2525);
    assert.equal(ex?.tls, 'opportunistic');
    assert.equal(ex?.implicitTls, false);
    assert.equal(ex?.auth?.username, 'u');
    assert.equal(await ex?.auth?.password(), 'first secret');
    await writeFile(pw, 'rotated\n');
    assert.equal(await ex?.auth?.password(), 'rotated');
    const star = relays.get('*');
    assert.equal(star?.tls, 'required-verify');
    assert.equal(star?.implicitTls, true);
    assert.equal(star?.label, 'smtp.provider.net:465');
    assert.equal(await star?.auth?.password(), 'inline');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('lmtp transports: a Unix socket or [address]:port, no TLS, LMTP mode; other strings are no route', () => {
  const relays = buildRelays(
    {
      'dovecot.test': 'lmtp:unix:/run/dovecot/lmtp',
      'tcp.test': 'lmtp:[127.0.0.1]:24',
      'local.test': 'local',
    },
    'opportunistic',
  );
  assert.deepEqual(relays.get('dovecot.test'), {
    host: '/run/dovecot/lmtp',
    port: 0,
    path: '/run/dovecot/lmtp',
    tls: 'none',
    implicitTls: false,
    label: 'lmtp:unix:/run/dovecot/lmtp',
    lmtp: true,
  });
  assert.deepEqual(relays.get('tcp.test'), {
    host: '127.0.0.1',
    port: 24,
    tls: 'none',
    implicitTls: false,
    label: 'lmtp:[127.0.0.1]:24',
    lmtp: true,
  });
  assert.equal(relays.has('local.test'), false);
  assert.equal(parseLmtpTransport('lmtp:host'), null, 'LMTP has no default port');
  assert.equal(parseLmtpTransport('local'), null);
});
