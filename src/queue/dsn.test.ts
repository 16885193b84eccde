import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildDsn, DsnError, shouldNotify, type DsnInput } from './dsn.js';
import { parseDsn } from '../../test/helpers/dsn-parser.js';
import { explainStatus } from './dsn-explanations.js';

const ARRIVAL = Date.UTC(2026, 0, 1, 10, 0, 0);
const NOW = Date.UTC(2026, 0, 6, 10, 0, 0);
const QID = '01KABCDEFGHJKMNP';

const HEADER =
  'From: alice@example.org\r\nTo: bob@example.com\r\nSubject: hi\r\nMessage-ID: <1@example.org>\r\n';
const ORIGINAL = Buffer.from(`${HEADER}\r\nHello Bob\r\n.. a line\r\n`);

function input(over: Partial<DsnInput> = {}): DsnInput {
  return {
    reportingMta: 'mx.sterna.test',
    qid: QID,
    arrivalDate: ARRIVAL,
    originalSender: 'alice@example.org',
    recipients: [
      {
        address: 'bob@example.com',
        action: 'failed',
        status: '5.1.1',
        remoteMta: 'dns; mx1.example.com',
        diagnostic: { type: 'smtp', text: '550 5.1.1 <bob@example.com>: user unknown' },
        lastAttempt: Date.UTC(2026, 0, 1, 10, 5, 0),
        tried: 'delivery to mx1.example.com [192.0.2.1] on 1 attempt',
      },
    ],
    ret: 'HDRS',
    originalMessage: ORIGINAL,
    now: NOW,
    kind: 'failure',
    messageIdDomain: 'sterna.test',
    ...over,
  };
}

/** Every line ends in CRLF and holds at most 998 octets (RFC 5322 2.1.1). */
function assertWellFormedLines(message: Buffer): void {
  assert.ok(message.subarray(-2).equals(Buffer.from('\r\n')), 'ends with CRLF');
  let start = 0;
  for (let i = 0; i < message.length; i++) {
    const b = message[i];
    if (b === 0x0a) assert.equal(message[i - 1], 0x0d, `bare LF at ${i}`);
    if (b === 0x0d) {
      assert.equal(message[i + 1], 0x0a, `bare CR at ${i}`);
      assert.ok(i - start <= 998, `line of ${i - start} octets at ${start}`);
      start = i + 2;
    }
  }
}

/** The human text with its wrapping undone, for matching sentences. */
function flat(text: string): string {
  return text.replace(/\r\n\s*/g, ' ');
}

async function* chunked(
  buf: Buffer,
  size: number,
  pulled?: { count: number; closed: boolean },
): AsyncGenerator<Buffer> {
  try {
    for (let i = 0; i < buf.length; i += size) {
      if (pulled !== undefined) pulled.count++;
      await Promise.resolve(); // each chunk arrives on a later tick, as from a file stream
      yield buf.subarray(i, i + size);
    }
  } finally {
    if (pulled !== undefined) pulled.closed = true;
  }
}

test('RFC 3464 round trip: per-message and per-recipient fields, field by field', async () => {
  const dsn = await buildDsn(
    input({
      envid: 'QQ+314159',
      recipients: [
        {
          address: 'bob@example.com',
          orcpt: { type: 'rfc822', address: 'Bob@Example.com' },
          action: 'failed',
          status: '5.1.1',
          remoteMta: 'dns; mx1.example.com',
          diagnostic: { type: 'smtp', text: '550 5.1.1 <bob@example.com>: user unknown' },
          lastAttempt: Date.UTC(2026, 0, 1, 10, 5, 0),
        },
        {
          address: 'carol@example.net',
          action: 'failed',
          status: '4.4.1',
          diagnostic: {
            type: 'smtp',
            text: 'connect to mx.example.net[198.51.100.7]:25: Connection timed out',
          },
        },
      ],
    }),
  );
  assert.equal(dsn.envelopeSender, '');
  assert.equal(dsn.recipient, 'alice@example.org');
  assert.deepEqual(dsn.mailParams, {});
  const p = parseDsn(dsn.message);
  assert.deepEqual(p.headers, {
    from: 'Mail Delivery System <MAILER-DAEMON@mx.sterna.test>',
    to: '<alice@example.org>',
    subject: 'Undelivered Mail Returned to Sender',
    date: 'Tue, 6 Jan 2026 10:00:00 +0000',
    'message-id': `<${QID}.failure.${NOW.toString(36)}@sterna.test>`,
    'auto-submitted': 'auto-replied',
    'mime-version': '1.0',
    'content-type': `multipart/report; report-type=delivery-status; boundary="=_sterna_${QID}_${NOW.toString(36)}"`,
  });
  assert.equal(p.reportType, 'delivery-status');
  assert.equal(p.statusType, 'message/delivery-status');
  assert.deepEqual(p.perMessage, {
    'reporting-mta': 'dns; mx.sterna.test',
    'original-envelope-id': 'QQ+314159',
    'x-sterna-queue-id': QID,
    'arrival-date': 'Thu, 1 Jan 2026 10:00:00 +0000',
  });
  assert.deepEqual(p.recipients, [
    {
      'original-recipient': 'rfc822;Bob@Example.com',
      'final-recipient': 'rfc822; bob@example.com',
      action: 'failed',
      status: '5.1.1',
      'remote-mta': 'dns; mx1.example.com',
      'diagnostic-code': 'smtp; 550 5.1.1 <bob@example.com>: user unknown',
      'last-attempt-date': 'Thu, 1 Jan 2026 10:05:00 +0000',
    },
    {
      'final-recipient': 'rfc822; carol@example.net',
      action: 'failed',
      status: '4.4.1',
      'diagnostic-code': 'smtp; connect to mx.example.net[198.51.100.7]:25: Connection timed out',
    },
  ]);
  assertWellFormedLines(dsn.message);
});

test('RFC 3461 6.3: no ENVID, no Original-Envelope-Id; no ORCPT, no Original-Recipient', async () => {
  const p = parseDsn((await buildDsn(input())).message);
  assert.equal(p.perMessage['original-envelope-id'], undefined);
  assert.equal(p.recipients[0]?.['original-recipient'], undefined);
});

test('RFC 5321 4.5.5: never a DSN to the null sender', async () => {
  await assert.rejects(buildDsn(input({ originalSender: '' })), (e: unknown) => {
    assert.ok(e instanceof DsnError);
    assert.equal(e.code, 'DSN_NULL_SENDER');
    return true;
  });
});

test('malformed inputs are refused, never written into a header', async () => {
  const bad: Partial<DsnInput>[] = [
    { originalSender: 'alice@example.org\r\nBcc: eve@example.net' },
    { recipients: [] },
    { recipients: [{ address: 'bob@example.com', action: 'failed', status: '550' }] },
    {
      recipients: [{ address: 'bob@example.com', action: 'failed', status: '5.1.1', remoteMta: 'dns; a\nb' }],
    },
    { recipients: [{ address: 'bob@example.com\r\n', action: 'failed', status: '5.1.1' }] },
    { envid: 'x\ry' },
  ];
  for (const over of bad) {
    await assert.rejects(
      buildDsn(input(over)),
      (e: unknown) => e instanceof DsnError && e.code === 'DSN_BAD_INPUT',
    );
  }
});

test('RFC 6522: three parts, text/plain then delivery-status then the returned content', async () => {
  const msg = (await buildDsn(input())).message.toString('latin1');
  const types = [...msg.matchAll(/^Content-Type: ([^;\r\n]+)/gm)].map((m) => m[1]);
  assert.deepEqual(types, [
    'multipart/report',
    'text/plain',
    'message/delivery-status',
    'text/rfc822-headers',
  ]);
});

test('RFC 3461 4.3: RET=HDRS returns the header section only, as text/rfc822-headers', async () => {
  const p = parseDsn((await buildDsn(input({ ret: 'HDRS' }))).message);
  assert.equal(p.returned?.contentType, 'text/rfc822-headers');
  assert.equal(p.returned?.content.toString(), HEADER);
  assert.ok(
    flat(p.humanText).includes(
      'The header of your message is attached below; its body is not returned (the whole message is returned only when the sender asks for it, with RET=FULL).',
    ),
  );
});

test('RFC 3461 4.3: RET=FULL returns the whole message in a failure report, as message/rfc822', async () => {
  const dsn = await buildDsn(input({ ret: 'FULL' }));
  const p = parseDsn(dsn.message);
  assert.equal(p.returned?.contentType, 'message/rfc822');
  assert.ok(p.returned?.content.equals(ORIGINAL));
  assert.match(p.humanText, /A copy of your message is attached below\./);
  assert.deepEqual(dsn.mailParams, {});
});

test('RFC 3461 4.3: a delay report carries only the header, even with RET=FULL', async () => {
  const p = parseDsn((await buildDsn(input({ ret: 'FULL', kind: 'delay' }))).message);
  assert.equal(p.returned?.contentType, 'text/rfc822-headers');
  assert.equal(p.returned?.content.toString(), HEADER);
});

test('RET=FULL above the size limit returns the header section only, and says why', async () => {
  const big = Buffer.concat([Buffer.from(`${HEADER}\r\n`), Buffer.alloc(5000, 'a\r\n')]);
  const p = parseDsn(
    (await buildDsn(input({ ret: 'FULL', originalMessage: big, maxReturnBytes: 1000 }))).message,
  );
  assert.equal(p.returned?.contentType, 'text/rfc822-headers');
  assert.equal(p.returned?.content.toString(), HEADER);
  assert.ok(
    flat(p.humanText).includes('its body is not returned (it is larger than the mail system returns).'),
  );
});

test('an original that cannot travel unchanged (bare LF, long line) is cut to its header, or left out', async () => {
  const bareLf = Buffer.from(`${HEADER}\r\nline one\nline two\r\n`);
  let p = parseDsn((await buildDsn(input({ ret: 'FULL', originalMessage: bareLf }))).message);
  assert.equal(p.returned?.contentType, 'text/rfc822-headers');
  assert.equal(p.returned?.content.toString(), HEADER);
  assert.ok(
    flat(p.humanText).includes('its body is not returned (it has lines a report cannot carry unchanged).'),
  );

  const longHeader = Buffer.from(`Subject: ${'x'.repeat(1200)}\r\n\r\nbody\r\n`);
  const dsn = await buildDsn(input({ ret: 'FULL', originalMessage: longHeader }));
  p = parseDsn(dsn.message);
  assert.equal(p.returned, null);
  assert.ok(
    flat(p.humanText).includes(
      'Your message is not attached: its header could not be carried in this report unchanged.',
    ),
  );
  assertWellFormedLines(dsn.message);
});

test('a message with no body: its whole text is the header section', async () => {
  const headersOnly = Buffer.from(HEADER);
  const p = parseDsn((await buildDsn(input({ originalMessage: headersOnly }))).message);
  assert.equal(p.returned?.content.toString(), HEADER);
});

test('a streamed original is read only up to its header for RET=HDRS, then closed', async () => {
  const body = Buffer.alloc(100_000, 'body line\r\n');
  const original = Buffer.concat([Buffer.from(`${HEADER}\r\n`), body]);
  const pulled = { count: 0, closed: false };
  const dsn = await buildDsn(input({ originalMessage: chunked(original, 64, pulled) }));
  assert.equal(pulled.closed, true);
  assert.equal(pulled.count, Math.ceil((HEADER.length + 2) / 64));
  assert.equal(parseDsn(dsn.message).returned?.content.toString(), HEADER);
});

test('the header end is found at every chunk split, the same as from one buffer', async () => {
  const whole = await buildDsn(input());
  for (const size of [1, 2, 3, 5, 7, 64]) {
    const streamed = await buildDsn(input({ originalMessage: chunked(ORIGINAL, size) }));
    assert.ok(streamed.message.equals(whole.message), `chunks of ${size}`);
  }
  const full = await buildDsn(input({ ret: 'FULL' }));
  const fullStreamed = await buildDsn(input({ ret: 'FULL', originalMessage: chunked(ORIGINAL, 3) }));
  assert.ok(fullStreamed.message.equals(full.message));
});

test('the same input gives the same octets', async () => {
  const a = await buildDsn(input({ ret: 'FULL' }));
  const b = await buildDsn(input({ ret: 'FULL' }));
  assert.ok(a.message.equals(b.message));
});

test('human text: recipient, what was tried, the exact remote reply, meaning and advice', async () => {
  const p = parseDsn((await buildDsn(input())).message);
  const t = p.humanText;
  assert.ok(t.startsWith('This is the mail system at mx.sterna.test.\r\n\r\n'));
  assert.ok(t.includes(`    Queue id: ${QID}\r\n    Received: Thu, 1 Jan 2026 10:00:00 +0000\r\n`));
  assert.ok(t.includes('\r\n<bob@example.com>\r\n'));
  assert.ok(t.includes('    Result: not delivered: permanent failure (status 5.1.1).\r\n'));
  assert.ok(t.includes('    What was tried: delivery to mx1.example.com [192.0.2.1] on 1 attempt.\r\n'));
  assert.ok(
    t.includes('    The remote server replied:\r\n        550 5.1.1 <bob@example.com>: user unknown\r\n'),
  );
  assert.ok(
    t.includes(
      "    What it most likely means: The recipient's mailbox does not exist at the\r\n        receiving server.\r\n",
    ),
  );
  assert.ok(t.includes('    What you can do: Check the address for typing mistakes.'));
});

test("human text: a reply given by no remote server (a content filter) is not called the remote server's", async () => {
  const p = parseDsn(
    (
      await buildDsn(
        input({
          recipients: [
            {
              address: 'bob@example.com',
              action: 'failed',
              status: '5.7.1',
              diagnostic: { type: 'smtp', text: '550 5.7.1 Message refused by the content filter' },
              tried: 'a check by the content filter before the message was queued',
            },
          ],
        }),
      )
    ).message,
  );
  const t = p.humanText;
  assert.ok(
    t.includes('    The reply was:\r\n        550 5.7.1 Message refused by the content filter\r\n'),
    t,
  );
  assert.ok(!t.includes('remote server'), t);
});

test('RFC 3464 delay report: action delayed, Will-Retry-Until, and the text says nothing is needed yet', async () => {
  const until = ARRIVAL + 5 * 24 * 3600_000;
  const dsn = await buildDsn(
    input({
      kind: 'delay',
      now: ARRIVAL + 4 * 3600_000,
      recipients: [
        {
          address: 'bob@example.com',
          action: 'delayed',
          status: '4.4.1',
          remoteMta: 'dns; mx1.example.com',
          diagnostic: { type: 'smtp', text: '421 4.4.1 try later' },
          lastAttempt: ARRIVAL + 4 * 3600_000 - 60_000,
          willRetryUntil: until,
        },
      ],
    }),
  );
  const p = parseDsn(dsn.message);
  assert.equal(p.headers.subject, 'Delayed Mail (still being retried)');
  assert.deepEqual(p.recipients, [
    {
      'final-recipient': 'rfc822; bob@example.com',
      action: 'delayed',
      status: '4.4.1',
      'remote-mta': 'dns; mx1.example.com',
      'diagnostic-code': 'smtp; 421 4.4.1 try later',
      'last-attempt-date': 'Thu, 1 Jan 2026 13:59:00 +0000',
      'will-retry-until': 'Tue, 6 Jan 2026 10:00:00 +0000',
    },
  ]);
  const text = flat(p.humanText);
  assert.ok(
    text.includes(
      'This is only a warning: the mail system is still trying, and will keep trying until Tue, 6 Jan 2026 10:00:00 +0000.',
    ),
  );
  assert.ok(text.includes('You do not need to do anything now.'));
  assert.ok(text.includes('What you can do: Nothing yet: the mail system keeps trying on its own.'));
});

test('Will-Retry-Until is written only for delayed recipients', async () => {
  const p = parseDsn(
    (
      await buildDsn(
        input({
          recipients: [{ address: 'b@example.com', action: 'failed', status: '5.0.0', willRetryUntil: NOW }],
        }),
      )
    ).message,
  );
  assert.equal(p.recipients[0]?.['will-retry-until'], undefined);
});

test('success report: subject, action delivered, no advice', async () => {
  const p = parseDsn(
    (
      await buildDsn(
        input({
          kind: 'success',
          recipients: [
            {
              address: 'bob@example.com',
              action: 'delivered',
              status: '2.0.0',
              remoteMta: 'dns; mx1.example.com',
            },
          ],
        }),
      )
    ).message,
  );
  assert.equal(p.headers.subject, 'Successful Mail Delivery Report');
  assert.equal(p.recipients[0]?.action, 'delivered');
  assert.ok(p.humanText.includes('    Result: delivered (status 2.0.0).\r\n'));
  assert.equal(p.humanText.includes('What you can do'), false);
});

test('RFC 5322 2.1.1: a long diagnostic is folded; a longer-than-a-line token is cut, never over 998 octets', async () => {
  const words = Array.from({ length: 300 }, (_, i) => `word${i}`).join(' ');
  const text = `550 5.7.1 ${words}`;
  let dsn = await buildDsn(
    input({
      recipients: [
        { address: 'b@example.com', action: 'failed', status: '5.7.1', diagnostic: { type: 'smtp', text } },
      ],
    }),
  );
  assertWellFormedLines(dsn.message);
  assert.equal(parseDsn(dsn.message).recipients[0]?.['diagnostic-code'], `smtp; ${text}`);
  assert.ok(dsn.message.toString().includes('Diagnostic-Code: smtp; 550 5.7.1 word0'));

  const token = 'x'.repeat(3000);
  dsn = await buildDsn(
    input({
      recipients: [
        {
          address: 'b@example.com',
          action: 'failed',
          status: '5.7.1',
          diagnostic: { type: 'smtp', text: `550 ${token}` },
        },
      ],
    }),
  );
  assertWellFormedLines(dsn.message);
  const code = parseDsn(dsn.message).recipients[0]?.['diagnostic-code'] ?? '';
  assert.equal(code, `smtp; 550 ${'x'.repeat(958)}`);
});

test('the remote reply is one line of printable ASCII: CR, LF and control characters cannot inject fields', async () => {
  const text = '550-5.1.1 first line\r\n550 5.1.1 second\x00line\r\nX-Injected: yes\u00e9';
  const dsn = await buildDsn(
    input({
      recipients: [
        { address: 'b@example.com', action: 'failed', status: '5.1.1', diagnostic: { type: 'smtp', text } },
      ],
    }),
  );
  const p = parseDsn(dsn.message);
  assert.equal(
    p.recipients[0]?.['diagnostic-code'],
    'smtp; 550-5.1.1 first line 550 5.1.1 second?line X-Injected: yes?',
  );
  assert.equal(p.recipients[0]?.['x-injected'], undefined);
  assert.ok(p.humanText.includes('        550-5.1.1 first line 550 5.1.1 second?line X-Injected: yes?\r\n'));
  assertWellFormedLines(dsn.message);
});

test('RFC 6533: a UTF-8 original header and address use the global types and need SMTPUTF8', async () => {
  const header = 'From: José <jose@exämple.org>\r\nSubject: café\r\n';
  const original = Buffer.from(`${header}\r\nBonjour\r\n`, 'utf8');
  const dsn = await buildDsn(
    input({
      originalSender: 'jose@exämple.org',
      originalMessage: original,
      recipients: [{ address: 'zoë@example.com', action: 'failed', status: '5.1.1' }],
    }),
  );
  assert.deepEqual(dsn.mailParams, { body: '8BITMIME', smtputf8: true });
  const p = parseDsn(dsn.message);
  assert.equal(p.reportType, 'global-delivery-status');
  assert.equal(p.statusType, 'message/global-delivery-status');
  assert.equal(p.headers.to, '<jose@exämple.org>');
  assert.equal(p.recipients[0]?.['final-recipient'], 'utf-8; zoë@example.com');
  assert.equal(p.returned?.contentType, 'message/global-headers');
  assert.equal(p.returned?.content.toString('utf8'), header);
  assert.ok(p.humanText.includes('\r\n<zoë@example.com>\r\n'));
  const msg = dsn.message.toString('latin1');
  assert.match(msg, /^Content-Transfer-Encoding: 8bit\r$/m);
  assertWellFormedLines(dsn.message);

  const full = parseDsn((await buildDsn(input({ ret: 'FULL', originalMessage: original }))).message);
  assert.equal(full.returned?.contentType, 'message/global');
  assert.ok(full.returned?.content.equals(original));
});

test('an 8-bit body with an ASCII header stays message/rfc822 with 8bit transfer encoding and BODY=8BITMIME', async () => {
  const original = Buffer.from(`${HEADER}\r\nGrüße\r\n`, 'utf8');
  const dsn = await buildDsn(input({ ret: 'FULL', originalMessage: original }));
  assert.deepEqual(dsn.mailParams, { body: '8BITMIME' });
  const p = parseDsn(dsn.message);
  assert.equal(p.reportType, 'delivery-status');
  assert.equal(p.returned?.contentType, 'message/rfc822');
  assert.ok(p.returned?.content.equals(original));
  assert.match(
    dsn.message.toString('latin1'),
    /Content-Type: message\/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n/,
  );
});

test('RFC 2046 5.1.1: a boundary found in the original is lengthened until it is not', async () => {
  const fake = `--=_sterna_${QID}_${NOW.toString(36)}`;
  const original = Buffer.from(`${HEADER}\r\n${fake}\r\n${fake}_1--\r\nend\r\n`);
  const dsn = await buildDsn(input({ ret: 'FULL', originalMessage: original }));
  const p = parseDsn(dsn.message);
  assert.match(
    p.headers['content-type'] ?? '',
    new RegExp(`boundary="=_sterna_${QID}_${NOW.toString(36)}_1_2"`),
  );
  assert.ok(p.returned?.content.equals(original));
});

test('RFC 3461 4.1 NOTIFY: default FAILURE and DELAY, NEVER for none, SUCCESS only when asked', () => {
  const table: [Parameters<typeof shouldNotify>[1], boolean, boolean, boolean][] = [
    // notify, failure, delay, success
    [undefined, true, true, false],
    [[], true, true, false],
    [['NEVER'], false, false, false],
    [['FAILURE'], true, false, false],
    [['DELAY'], false, true, false],
    [['SUCCESS'], false, false, true],
    [['SUCCESS', 'FAILURE', 'DELAY'], true, true, true],
  ];
  for (const [notify, failure, delay, success] of table) {
    const label = JSON.stringify(notify);
    assert.equal(shouldNotify('failure', notify), failure, `failure ${label}`);
    assert.equal(shouldNotify('delay', notify), delay, `delay ${label}`);
    assert.equal(shouldNotify('success', notify), success, `success ${label}`);
  }
});

test('RFC 3463 explanations: by whole code, subject.detail, subject, class', () => {
  assert.equal(
    explainStatus('5.1.1').meaning,
    "The recipient's mailbox does not exist at the receiving server.",
  );
  assert.equal(
    explainStatus('5.1.10').meaning,
    "The recipient's domain announces that it accepts no mail at all (a null MX record, RFC 7505).",
  );
  assert.equal(
    explainStatus('5.1.2').meaning,
    "The recipient's domain (the part after the @) does not exist, or has no mail server.",
  );
  assert.equal(explainStatus('5.3.4').meaning, "The message is larger than the recipient's server accepts.");
  assert.deepEqual(explainStatus('5.2.3'), explainStatus('5.3.4'));
  assert.equal(
    explainStatus('5.7.10').meaning,
    'The receiving server requires an encrypted (TLS) connection, and one could not be set up with it.',
  );
  assert.match(explainStatus('4.7.1').meaning, /greylisting/);
  assert.match(explainStatus('5.7.1').meaning, /refused the message by policy/);
  assert.equal(explainStatus('5.1.99').meaning, 'There is a problem with the recipient address.');
  assert.equal(explainStatus('4.9.9').meaning, 'A temporary problem prevented delivery.');
  assert.equal(explainStatus('5.9.9').meaning, 'A permanent problem prevented delivery.');
  assert.deepEqual(explainStatus('2.0.0'), {
    meaning: 'The message was delivered.',
    advice: 'Nothing to do.',
  });
  assert.equal(explainStatus('550').meaning, 'The mail system reported a status it does not recognise.');
});

test('RFC 3463 explanations: the remote text refines a vague code, never a precise one', () => {
  const spam = explainStatus('5.7.1', '550 5.7.1 Message rejected as spam');
  assert.match(spam.meaning, /took the message for spam/);
  assert.deepEqual(explainStatus('5.0.0', '554 Listed on a DNSBL'), spam);
  assert.deepEqual(explainStatus('5.0.0', '550 User unknown'), explainStatus('5.1.1'));
  assert.deepEqual(explainStatus('5.1.0', '550 5.1.0 no such user here'), explainStatus('5.1.1'));
  assert.deepEqual(explainStatus('4.2.0', '452 4.2.0 mailbox full'), explainStatus('4.2.2'));
  assert.deepEqual(
    explainStatus('5.7.0', '530 5.7.0 Must issue a STARTTLS command first'),
    explainStatus('5.7.10'),
  );
  assert.deepEqual(explainStatus('5.0.0', '552 message too big'), explainStatus('5.3.4'));
  // A precise code wins over words that would otherwise suggest something else.
  assert.deepEqual(explainStatus('5.1.1', '550 5.1.1 unknown user (not spam)'), explainStatus('5.1.1'));
  assert.deepEqual(explainStatus('5.2.2', '552 5.2.2 over quota, message too big'), explainStatus('5.2.2'));
});
