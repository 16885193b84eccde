import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DomainLabels, SternaMetrics } from './metrics.js';

test('destination labels: busy domains get their own, one-off and surplus domains are "other"', () => {
  const labels = new DomainLabels(2, 3);
  assert.deepEqual(
    ['a.test', 'a.test', 'a.test', 'a.test'].map((d) => labels.label(d)),
    ['other', 'other', 'a.test', 'a.test'],
  );
  for (let i = 0; i < 10_000; i++) assert.equal(labels.label(`spam${i}.test`), 'other');
  assert.deepEqual(
    ['b.test', 'b.test', 'b.test'].map((d) => labels.label(d)),
    ['other', 'other', 'b.test'],
  );
  // The limit is reached: a third busy domain stays "other", the first two keep their labels.
  assert.deepEqual(
    [1, 2, 3, 4].map(() => labels.label('c.test')),
    ['other', 'other', 'other', 'other'],
  );
  assert.equal(labels.label('a.test'), 'a.test');
});

test('delivery attempts by destination stay bounded whatever the number of domains', async () => {
  const m = new SternaMetrics({ topDomains: 3 });
  for (let i = 0; i < 500; i++) for (let k = 0; k < 3; k++) m.deliveryAttempt('deferred', `d${i}.test`);
  const text = await m.render();
  const series = text.split('\n').filter((l) => l.startsWith('sterna_delivery_attempts_total{'));
  assert.equal(series.length, 4, series.join('\n'));
  assert.match(text, /^sterna_delivery_attempts_total\{result="deferred",destination="other"\} 1497$/m);
});

test('replies are counted by class, code and enhanced code; none when the reply has no enhanced code', async () => {
  const m = new SternaMetrics({ topDomains: 1 });
  m.reply(250, '2.0.0');
  m.reply(250, '2.0.0');
  m.reply(220, undefined);
  const text = await m.render();
  assert.match(text, /^sterna_smtp_replies_total\{class="2xx",code="250",enhanced="2\.0\.0"\} 2$/m);
  assert.match(text, /^sterna_smtp_replies_total\{class="2xx",code="220",enhanced="none"\} 1$/m);
});
