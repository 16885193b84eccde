/**
 * The monitoring files operators copy (contrib/prometheus/): the alert rules pass `promtool check
 * rules`, the sample configuration `promtool check config` (with its token file and rules beside
 * it), and every sterna_ metric the rules use is one the server exports, including the
 * certificate expiry gauge, which matches the server's certificate.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startAdminServer } from './helpers/admin.js';
import { assertRunOk, makeTempDir, requireTool, runTool } from './helpers/tools.js';

const CONTRIB = fileURLToPath(new URL('../../contrib/prometheus/', import.meta.url));
const RULES = path.join(CONTRIB, 'sterna-alerts.yml');

test('the alert rules pass promtool check rules', requireTool('promtool'), async () => {
  const run = await runTool('promtool', ['check', 'rules', RULES]);
  assertRunOk(run);
  assert.match(run.stdout, /SUCCESS: \d+ rules found/);
});

test(
  'the sample Prometheus configuration passes promtool check config',
  requireTool('promtool'),
  async () => {
    const tmp = await makeTempDir('sterna-prom-');
    try {
      const token = path.join(tmp.dir, 'token');
      await writeFile(token, 'x'.repeat(32));
      const config = (await readFile(path.join(CONTRIB, 'prometheus.yml'), 'utf8')).replace(
        '/etc/prometheus/sterna-admin-token',
        token,
      );
      await writeFile(path.join(tmp.dir, 'prometheus.yml'), config);
      await copyFile(RULES, path.join(tmp.dir, 'sterna-alerts.yml'));
      assertRunOk(await runTool('promtool', ['check', 'config', path.join(tmp.dir, 'prometheus.yml')]));
    } finally {
      await tmp.cleanup();
    }
  },
);

test("every sterna_ metric in the rules is exported; the certificate expiry is the certificate's", async () => {
  const a = await startAdminServer();
  try {
    const text = (await a.call('GET', '/metrics')).text;
    const rules = await readFile(RULES, 'utf8');
    const used = new Set([...rules.matchAll(/\b(sterna_[a-z_]+?)(?:_bucket)?\b/g)].map((m) => m[1] ?? ''));
    assert.ok(used.size >= 4, [...used].join(' '));
    for (const name of used)
      assert.match(text, new RegExp(`^# TYPE ${name} `, 'm'), `${name} is not exported`);
    const pem = await readFile(path.join(a.server.dataDir, 'tls', 'test-cert.pem'));
    const expected = Date.parse(new X509Certificate(pem).validTo) / 1000;
    assert.match(text, new RegExp(`^sterna_tls_certificate_expiry_timestamp_seconds ${expected}$`, 'm'));
  } finally {
    await a.stop();
  }
});
