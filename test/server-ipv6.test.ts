/** Listeners on IPv6 as well as IPv4: the same service on [::1] and 127.0.0.1. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TestClient } from './helpers/smtp-client.js';
import { startTestServer } from './helpers/server.js';
import { waitForMessages } from './helpers/maildir.js';

test('smtp listens on IPv6 [::1] and IPv4; the Received header shows an IPv6 address literal', async () => {
  const server = await startTestServer({
    listen: 'smtp = ["[::1]:0", "127.0.0.1:0"]\nsubmission = []\nsubmissions = []',
    users: [{ address: 'ivy@sterna.test', password: 'pw-ivy-12' }],
  });
  try {
    const v6 = server.app.addresses.find((a) => a.address === '::1');
    const v4 = server.app.addresses.find((a) => a.address === '127.0.0.1');
    assert.ok(v6 !== undefined && v4 !== undefined, JSON.stringify(server.app.addresses));
    const c = await TestClient.connect(v6.port, { host: '::1' });
    await c.expect(220);
    await c.cmd('EHLO v6.test');
    await c.cmd('MAIL FROM:<a@example.org>').then((r) => assert.equal(r.code, 250));
    await c.cmd('RCPT TO:<ivy@sterna.test>').then((r) => assert.equal(r.code, 250));
    await c.cmd('DATA').then((r) => assert.equal(r.code, 354));
    c.send('Subject: v6\r\n\r\nover IPv6\r\n.\r\n');
    await c.expect(250, '2.0.0');
    c.close();
    const [msg] = await waitForMessages(server.dataDir, 'sterna.test', 'ivy');
    assert.ok(msg?.toString().includes('Received: from v6.test ([IPv6:::1])'), msg?.toString());
    const c4 = await TestClient.connect(v4.port);
    await c4.expect(220);
    c4.close();
  } finally {
    await server.stop({ remove: true });
  }
});
