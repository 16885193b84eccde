/**
 * The web dashboard (web/, served under /ui/ by the admin listener) in a real browser: Debian's
 * chromium driven by playwright-core against a real Sterna with a token and deferred mail in
 * its queue. Each page loads without console errors; login keeps the token for the API calls;
 * the charts draw; the queue page's hold / release / flush / delete act on the server's queue;
 * the message page tells a queue id's story; the users page adds and deletes a user. Without
 * a browser: the files answer without the token from a fixed list, the API not, and the new
 * routes (stats, destinations) over HTTP. Screenshots go to test-artifacts/ (git-ignored).
 */
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startAdminServer, type AdminTestServer } from './helpers/admin.js';
import { sendMessage, waitFor } from './helpers/outbound.js';
import { TestClient } from './helpers/smtp-client.js';
import { findTool, requireTool } from './helpers/tools.js';

const RELAY = '[relay]\ntrusted_networks = ["127.0.0.1/32"]\n';
const ARTIFACTS = 'test-artifacts';

/** Queues one message to a domain nothing answers for: it stays deferred. */
function queueRemote(a: AdminTestServer, i: number): Promise<string> {
  const from = `sender${i}@sterna.test`;
  const to = `rcpt${i}@far${i % 2}.test`;
  return sendMessage(a.server.ports.smtp, {
    from,
    to: [to],
    body: `From: <${from}>\r\nTo: <${to}>\r\nSubject: dashboard ${i}\r\n\r\nhello\r\n`,
  });
}

/** One RCPT refused (no such local user): 550 5.1.1, for the refusals page. */
async function refuseOne(a: AdminTestServer): Promise<void> {
  const c = await TestClient.connect(a.server.ports.smtp);
  try {
    await c.expect(220);
    await c.cmd('EHLO client.test');
    await c.cmd('MAIL FROM:<x@example.net>');
    assert.equal((await c.cmd('RCPT TO:<nobody@sterna.test>')).code, 550);
    await c.cmd('QUIT');
  } finally {
    c.close();
  }
}

interface Listed {
  qid: string;
  held: boolean;
  recipients: { attempts?: number }[];
}

async function listed(a: AdminTestServer, qid: string): Promise<Listed | null> {
  const r = await a.call('GET', `/api/queue/${qid}`);
  if (r.status === 404) return null;
  assert.equal(r.status, 200, r.text);
  return r.json as Listed;
}

describe('dashboard files and routes over HTTP', () => {
  let a: AdminTestServer;
  before(async () => {
    a = await startAdminServer({ toml: RELAY });
    await queueRemote(a, 0);
    await waitFor('a deferred message', () =>
      a.server.app.spool.list().some((m) => m.states.some((s) => s.status === 'deferred')),
    );
  });
  after(() => a.stop());

  test('the page and its files answer without the token, from a fixed list', async () => {
    const root = await fetch(`${a.base}/`, { redirect: 'manual' });
    assert.equal(root.status, 302);
    assert.equal(root.headers.get('location'), '/ui/');
    const page = await a.call('GET', '/ui/', { auth: false });
    assert.equal(page.status, 200);
    assert.equal(page.headers.get('content-type'), 'text/html; charset=utf-8');
    assert.match(page.headers.get('content-security-policy') ?? '', /script-src 'self'/);
    assert.match(page.text, /<script type="module" src="\/ui\/app.js">/);
    const js = await a.call('GET', '/ui/app.js', { auth: false });
    assert.equal(js.status, 200);
    assert.equal(js.headers.get('content-type'), 'text/javascript; charset=utf-8');
    assert.equal(
      (await a.call('GET', '/ui/app.css', { auth: false })).headers.get('content-type'),
      'text/css; charset=utf-8',
    );
    for (const p of [
      '/ui/index.html',
      '/ui/../package.json',
      '/ui/%2e%2e/package.json',
      '/ui/app.js.map',
      '/ui/x',
    ]) {
      // No such file: 401 without the token (nothing is told), 404 with it.
      assert.equal((await a.call('GET', p, { auth: false })).status, 401, p);
      assert.equal((await a.call('GET', p)).status, 404, p);
    }
    // The data still needs the token.
    for (const p of ['/api/stats/series', '/api/stats/refusals', '/api/destinations'])
      assert.equal((await a.call('GET', p, { auth: false })).status, 401, p);
  });

  test('the series counts the hour in 10 s buckets; destinations say why a domain waits', async () => {
    const series = await a.call('GET', '/api/stats/series');
    assert.equal(series.status, 200);
    const s = series.json as {
      bucketSeconds: number;
      time: number[];
      counts: Record<string, number[]>;
      queue: (number | null)[];
    };
    assert.equal(s.bucketSeconds, 10);
    assert.equal(s.time.length, 360);
    const total = (k: string): number => (s.counts[k] ?? []).reduce((x, y) => x + y, 0);
    assert.equal(total('queued'), 1);
    assert.equal(total('deferred'), 1);
    assert.equal(s.queue.at(-1), 1);

    const d = await a.call('GET', '/api/destinations');
    assert.equal(d.status, 200);
    const dest = d.json as {
      domains: number;
      destinations: {
        domain: string;
        recipients: number;
        messages: number;
        reasons: { reason: string; example: string }[];
      }[];
    };
    assert.equal(dest.domains, 1);
    const far = dest.destinations[0];
    assert.equal(far?.domain, 'far0.test');
    assert.equal(far.recipients, 1);
    assert.equal(far.messages, 1);
    assert.ok(far.reasons.length === 1 && far.reasons[0]!.example !== '', JSON.stringify(far.reasons));
  });
});

describe('dashboard in chromium', { skip: requireTool('chromium').skip }, () => {
  let a: AdminTestServer;
  let browser: Browser;
  let page: Page;
  const qids: string[] = [];
  const consoleErrors: string[] = [];
  const queueRequests: string[] = [];

  before(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    a = await startAdminServer({ toml: RELAY });
    for (let i = 0; i < 4; i++) qids.push(await queueRemote(a, i));
    await waitFor(
      'four deferred messages',
      () =>
        a.server.app.spool.list().filter((m) => m.states.every((s) => s.status === 'deferred')).length === 4,
    );
    await refuseOne(a);
    browser = await chromium.launch({
      executablePath: findTool('chromium') ?? '/usr/bin/chromium',
      args: ['--no-sandbox'],
    });
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(m.text());
    });
    page.setDefaultTimeout(10_000);
    page.on('pageerror', (err) => consoleErrors.push(err.message));
    page.on('dialog', (d) => void d.accept());
    page.on('request', (r) => {
      if (new URL(r.url()).pathname === '/api/queue') queueRequests.push(r.url());
    });
  });
  after(async () => {
    await browser?.close();
    await a?.stop();
  });

  /** Opens a page of the dashboard and checks it loaded without console errors. */
  async function open(hash: string, ready: string): Promise<void> {
    await page.goto(`${a.base}/ui/#/${hash}`);
    await page.locator(ready).first().waitFor();
    assert.deepEqual(consoleErrors, [], `console errors on #/${hash}`);
  }

  test('login keeps the token; the overview draws three charts', async () => {
    await page.goto(`${a.base}/ui/`);
    await page.locator('#login').waitFor();
    // The probe without a token was refused (401): that is how the page knows to ask.
    consoleErrors.length = 0;
    await page.fill('input[name=token]', 'wrong');
    await page.click('#login button[type=submit]');
    await page.getByText('That token was refused.').waitFor();
    consoleErrors.length = 0;
    await page.fill('input[name=token]', a.token ?? '');
    await page.click('#login button[type=submit]');
    await page.locator('.chart canvas').nth(2).waitFor();
    assert.equal(await page.evaluate("sessionStorage.getItem('sterna-admin-token')"), a.token);
    const canvases = page.locator('.chart canvas');
    assert.equal(await canvases.count(), 3);
    for (let i = 0; i < 3; i++) {
      const box = await canvases.nth(i).boundingBox();
      assert.ok(box !== null && box.width > 0 && box.height > 0, `chart ${i}: ${JSON.stringify(box)}`);
    }
    assert.equal(await page.textContent('#sum-queued'), '4');
    assert.equal(await page.textContent('#queue-now'), '4');
    await page.screenshot({ path: `${ARTIFACTS}/overview.png` });
    assert.deepEqual(consoleErrors, []);
  });

  test('the queue page lists, searches and acts on the server queue', async () => {
    await open('queue', '#queue-table tbody tr');
    assert.equal(await page.textContent('#queue-total'), '4');
    for (const q of qids) assert.equal(await page.locator(`tr[data-qid="${q}"]`).count(), 1, q);
    await page.screenshot({ path: `${ARTIFACTS}/queue.png` });

    const row = (q: string) => page.locator(`tr[data-qid="${q}"]`);
    await row(qids[0]!).getByRole('button', { name: 'hold' }).click();
    await row(qids[0]!).getByRole('button', { name: 'release' }).waitFor();
    assert.equal((await listed(a, qids[0]!))?.held, true);
    await row(qids[0]!).getByRole('button', { name: 'release' }).click();
    await row(qids[0]!).getByRole('button', { name: 'hold' }).waitFor();
    assert.equal((await listed(a, qids[0]!))?.held, false);

    // Flush: one more delivery attempt (it fails again on DNS: deferred, attempts 2).
    await row(qids[1]!).getByRole('button', { name: 'flush' }).click();
    await page.getByText(`flush: ${qids[1]} done`).waitFor();
    let story = '';
    await waitFor(
      () => `a second attempt: ${story}`,
      async () => {
        story = (await a.call('GET', `/api/messages/${qids[1]}/story`)).text;
        return (story.match(/"kind":"delivery"/g) ?? []).length >= 2;
      },
    );

    await row(qids[2]!).getByRole('button', { name: 'delete' }).click();
    await row(qids[2]!).waitFor({ state: 'detached' });
    assert.equal(await listed(a, qids[2]!), null);
    assert.equal(await page.textContent('#queue-total'), '3');

    // Searching is done by the server: far1.test holds the odd ones.
    await page.fill('input[name=domain]', 'far1.test');
    await page.click('form.filters button[type=submit]');
    await page.getByText('2 matching messages').waitFor();
    assert.equal(await page.locator(`tr[data-qid="${qids[0]}"]`).count(), 0);
    assert.equal(await page.locator(`tr[data-qid="${qids[3]}"]`).count(), 1);

    // Bounce: its recipient fails with a report to the sender; the message leaves the queue.
    await row(qids[3]!).getByRole('button', { name: 'bounce' }).click();
    await page.getByText(`bounce: ${qids[3]} done`).waitFor();
    await waitFor(`${qids[3]!} bounced`, async () => (await listed(a, qids[3]!)) === null);

    // Every queue request asked for one page: the browser never loads the whole queue.
    assert.ok(queueRequests.length >= 5, queueRequests.join('\n'));
    for (const u of queueRequests) assert.equal(new URL(u).searchParams.get('limit'), '50', u);
    assert.deepEqual(consoleErrors, []);
  });

  test('destinations and refusals pages', async () => {
    await open('destinations', '#destinations-table tr[data-domain="far1.test"]');
    assert.equal(await page.locator('#destinations-table tr[data-domain="far0.test"]').count(), 1);
    await page.screenshot({ path: `${ARTIFACTS}/destinations.png` });
    await open('refusals', '#refusals-table tbody tr');
    assert.match((await page.textContent('#refusals-table tbody')) ?? '', /^1rcpt550 5\.1\.1/);
    // A destination links to its messages on the queue page.
    await open('destinations', '#destinations-table tr[data-domain="far0.test"]');
    await page.locator('tr[data-domain="far0.test"] a').click();
    await page.locator('#queue-table tbody tr').first().waitFor();
    assert.equal(await page.inputValue('input[name=domain]'), 'far0.test');
    await page.screenshot({ path: `${ARTIFACTS}/refusals.png` });
  });

  test("the message page shows a queue id's story", async () => {
    await open(`message/${qids[1]}`, '#story-events li.event-delivery');
    assert.equal(await page.locator('#story-events li.event-queued').count(), 1);
    assert.ok((await page.locator('#story-events li.event-delivery').count()) >= 1);
    await page.screenshot({ path: `${ARTIFACTS}/message.png` });
  });

  test('the users page adds and deletes a user', async () => {
    await open('users', '#user-form');
    await page.fill('input[name=address]', 'bea@sterna.test');
    await page.fill('input[name=password]', 'bea-secret-12');
    await page.click('#user-form button[type=submit]');
    await page.locator('tr[data-user="bea@sterna.test"]').waitFor();
    assert.deepEqual((await a.call('GET', '/api/users')).json, { users: ['bea@sterna.test'] });
    await page.screenshot({ path: `${ARTIFACTS}/users.png` });
    await page.locator('tr[data-user="bea@sterna.test"]').getByRole('button', { name: 'delete' }).click();
    await page.locator('tr[data-user="bea@sterna.test"]').waitFor({ state: 'detached' });
    assert.deepEqual((await a.call('GET', '/api/users')).json, { users: [] });
    assert.deepEqual(consoleErrors, []);
  });
});
