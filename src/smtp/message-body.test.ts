/**
 * Unit tests for src/smtp/message-body.ts: the trace prefix, header facts (RFC 5321 6.3 loop
 * count, RFC 6409 8.2/8.3 Message-ID and Date presence), additions on submission, and bounded
 * buffering of the header section.
 */

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MessageBody, type BodySink, type HeaderFacts, type MessageBodyOptions } from './message-body.js';

const PREFIX = 'Received: from c by s; Thu, 15 Jan 2026 10:30:00 +0000\r\n';

class RecordingSink implements BodySink {
  readonly writes: Buffer[] = [];

  write(chunk: Buffer): Promise<void> {
    this.writes.push(Buffer.from(chunk));
    return Promise.resolve();
  }

  get text(): string {
    return Buffer.concat(this.writes).toString('utf8');
  }

  get bytes(): number {
    return this.writes.reduce((n, b) => n + b.length, 0);
  }
}

/** Feeds the chunks through a MessageBody and ends it. */
async function feed(
  chunks: readonly (string | Buffer)[],
  opts: Partial<MessageBodyOptions> = {},
): Promise<{ facts: HeaderFacts; sink: RecordingSink }> {
  const sink = new RecordingSink();
  const body = new MessageBody(sink, { prefix: PREFIX, ...opts });
  for (const c of chunks) await body.write(typeof c === 'string' ? Buffer.from(c, 'utf8') : c);
  const facts = await body.end();
  return { facts, sink };
}

/** Every split of `text` into two chunks, to check that facts do not depend on chunk boundaries. */
function splits(text: string): string[][] {
  const out: string[][] = [];
  for (let i = 0; i <= text.length; i++) out.push([text.slice(0, i), text.slice(i)]);
  return out;
}

async function factsOf(text: string): Promise<HeaderFacts> {
  return (await feed([text])).facts;
}

test('RFC 5321 4.4: the trace prefix is written first, then the body bytes unchanged', async () => {
  const { sink } = await feed(['Subject: x\r\n', '\r\n', 'body\r\n']);
  assert.equal(sink.text, `${PREFIX}Subject: x\r\n\r\nbody\r\n`);
  // Without addMissing nothing is held: the prefix goes out with the first chunk.
  assert.equal(sink.writes[0]?.toString('utf8'), `${PREFIX}Subject: x\r\n`);
});

test('RFC 5321 4.4: an empty message is the prefix alone', async () => {
  const { sink, facts } = await feed([]);
  assert.equal(sink.text, PREFIX);
  assert.deepEqual(facts, { receivedCount: 0, hasMessageId: false, hasDate: false, hasFrom: false });
});

test('RFC 5321 6.3: Received fields of the header section are counted, whatever the case and spacing', async () => {
  const text = 'Received: a\r\nreceived: b\r\nRECEIVED : c\r\nSubject: x\r\nReceived:d\r\n\r\nbody\r\n';
  assert.deepEqual(await factsOf(text), {
    receivedCount: 4,
    hasMessageId: false,
    hasDate: false,
    hasFrom: false,
  });
});

test('RFC 5321 6.3: the Received count does not depend on where the chunks split', async () => {
  const text = 'Received: from a\r\n\tby b; date\r\nReceived: x\r\nSubject: s\r\n\r\nReceived: in body\r\n';
  for (const parts of splits(text)) {
    assert.equal((await feed(parts)).facts.receivedCount, 2, JSON.stringify(parts));
  }
});

test('RFC 5322 2.2.3: a folded continuation line is not a field, even if it looks like one', async () => {
  const text = 'Subject: a\r\n Received: folded\r\n\tMessage-ID: <x@y>\r\n\r\n';
  assert.deepEqual(await factsOf(text), {
    receivedCount: 0,
    hasMessageId: false,
    hasDate: false,
    hasFrom: false,
  });
});

test('RFC 6409 8.2 / 8.3: Message-ID and Date are detected across chunk splits', async () => {
  const text =
    'From: a@b.test\r\nMessage-ID: <1@b.test>\r\nDate: Thu, 15 Jan 2026 10:30:00 +0000\r\n\r\nhi\r\n';
  for (const parts of splits(text)) {
    assert.deepEqual(
      (await feed(parts)).facts,
      { receivedCount: 0, hasMessageId: true, hasDate: true, hasFrom: true },
      JSON.stringify(parts),
    );
  }
  // One byte at a time.
  assert.deepEqual((await feed(Array.from(Buffer.from(text), (b) => Buffer.from([b])))).facts, {
    receivedCount: 0,
    hasMessageId: true,
    hasDate: true,
    hasFrom: true,
  });
});

test('RFC 5322 3.6: field names that merely start like Date or Message-ID do not count', async () => {
  const text =
    'Date-Received: x\r\nMessage-IDs: y\r\nResent-Date: z\r\nX-Date: w\r\nReceived-SPF: pass\r\n\r\n';
  assert.deepEqual(await factsOf(text), {
    receivedCount: 0,
    hasMessageId: false,
    hasDate: false,
    hasFrom: false,
  });
});

test('RFC 5322 2.1: the header section ends at the first empty line', async () => {
  const text = 'Subject: x\r\n\r\nReceived: not a header\r\nMessage-ID: <no@x>\r\nDate: no\r\n';
  assert.deepEqual(await factsOf(text), {
    receivedCount: 0,
    hasMessageId: false,
    hasDate: false,
    hasFrom: false,
  });
});

test('RFC 5322 2.2: the header section ends at a line that is not a header field', async () => {
  // A short line without a colon.
  assert.equal((await factsOf('Subject: x\r\nhello\r\nReceived: y\r\n')).receivedCount, 0);
  // A long line without a colon (longer than any field name we compare).
  assert.equal(
    (await factsOf('Subject: x\r\nThisIsAVeryLongLineWithoutAnyColonAtAll\r\nReceived: y\r\n')).receivedCount,
    0,
  );
  // A line whose colon comes after a space inside the "name": prose, not a field.
  assert.equal((await factsOf('Subject: x\r\nDear friend: hello\r\nReceived: y\r\n')).receivedCount, 0);
  assert.equal(
    (await factsOf('Subject: x\r\nThis is a long body line, with a colon: here\r\nDate: y\r\n')).hasDate,
    false,
  );
  // A line starting with a colon or a non-ASCII byte.
  assert.equal((await factsOf('Subject: x\r\n: y\r\nReceived: z\r\n')).receivedCount, 0);
  assert.equal((await factsOf('Subject: x\r\nété: y\r\nReceived: z\r\n')).receivedCount, 0);
  // A message whose first line starts with white space has no header section.
  assert.equal((await factsOf(' Received: x\r\nReceived: y\r\n')).receivedCount, 0);
});

test('RFC 5322 3.6.8: a long field name is still a field (the section goes on)', async () => {
  const text = 'X-A-Very-Long-Field-Name-Indeed: v\r\nReceived: y\r\n\r\n';
  assert.equal((await factsOf(text)).receivedCount, 1);
});

test('RFC 6409 8.2 / 8.3: addMissing output follows the prefix; it is given the facts of the whole section', async () => {
  const seen: HeaderFacts[] = [];
  const addMissing = (facts: HeaderFacts): string => {
    seen.push({ ...facts });
    return (facts.hasMessageId ? '' : 'Message-ID: <q@s>\r\n') + (facts.hasDate ? '' : 'Date: now\r\n');
  };
  const { sink } = await feed(['Subject: x\r\n', 'Date: then\r\n', '\r\n', 'body\r\n'], { addMissing });
  assert.equal(sink.text, `${PREFIX}Message-ID: <q@s>\r\nSubject: x\r\nDate: then\r\n\r\nbody\r\n`);
  assert.deepEqual(seen, [{ receivedCount: 0, hasMessageId: false, hasDate: true, hasFrom: false }]);
});

test('RFC 6409 8.2 / 8.3: addMissing on a message that is all headers (no empty line) runs at end()', async () => {
  const { sink } = await feed(['Subject: x\r\n', 'Message-ID: <a@b>\r\n'], {
    addMissing: (f) => (f.hasDate ? '' : 'Date: now\r\n'),
  });
  assert.equal(sink.text, `${PREFIX}Date: now\r\nSubject: x\r\nMessage-ID: <a@b>\r\n`);
});

test('RFC 6409 8.2 / 8.3: addMissing on an empty message', async () => {
  const { sink } = await feed([], { addMissing: () => 'Date: now\r\n' });
  assert.equal(sink.text, `${PREFIX}Date: now\r\n`);
});

test('header chunks are held only until the header section ends, then streamed', async () => {
  const sink = new RecordingSink();
  const body = new MessageBody(sink, { prefix: PREFIX, addMissing: () => 'Date: now\r\n' });
  await body.write(Buffer.from('Subject: x\r\n'));
  await body.write(Buffer.from('From: a@b.test\r\n'));
  assert.equal(sink.writes.length, 0);
  await body.write(Buffer.from('\r\nfirst body line\r\n'));
  assert.equal(sink.writes.length, 1);
  assert.equal(sink.text, `${PREFIX}Date: now\r\nSubject: x\r\nFrom: a@b.test\r\n\r\nfirst body line\r\n`);
  await body.write(Buffer.from('more\r\n'));
  assert.equal(sink.writes.length, 2);
  assert.equal(sink.writes[1]?.toString('utf8'), 'more\r\n');
  await body.end();
  assert.equal(sink.writes.length, 2);
});

test('memory is bounded: a 200 KiB header section is flushed once maxHeaderBuffer (64 KiB) is reached', async () => {
  const sink = new RecordingSink();
  let calls = 0;
  const body = new MessageBody(sink, {
    prefix: PREFIX,
    addMissing: () => {
      calls++;
      return 'Date: now\r\n';
    },
  });
  const line = `X-Filler: ${'f'.repeat(1012)}\r\n`; // 1 KiB
  assert.equal(line.length, 1024);
  const chunk = Buffer.from(line.repeat(4)); // 4 KiB
  let written = 0;
  for (let i = 0; i < 50; i++) {
    await body.write(chunk);
    written += chunk.length;
    if (written < 64 * 1024) {
      assert.equal(sink.writes.length, 0, `nothing written after ${written} octets`);
    } else {
      assert.ok(sink.writes.length > 0, `flushed after ${written} octets`);
    }
  }
  assert.equal(written, 200 * 1024);
  // The first write held exactly 64 KiB of header; the rest streamed chunk by chunk.
  assert.equal(sink.writes[0]?.length, PREFIX.length + 'Date: now\r\n'.length + 64 * 1024);
  assert.equal(sink.writes.length, 1 + (200 - 64) / 4);
  // Received fields after the flush are still counted.
  await body.write(Buffer.from('Received: late\r\n\r\nbody\r\n'));
  const facts = await body.end();
  assert.equal(facts.receivedCount, 1);
  assert.equal(calls, 1);
  assert.equal(
    sink.bytes,
    PREFIX.length + 'Date: now\r\n'.length + 200 * 1024 + 'Received: late\r\n\r\nbody\r\n'.length,
  );
});

test('maxHeaderBuffer is configurable', async () => {
  const sink = new RecordingSink();
  const body = new MessageBody(sink, { prefix: PREFIX, addMissing: () => '', maxHeaderBuffer: 10 });
  await body.write(Buffer.from('Subject: '));
  assert.equal(sink.writes.length, 0);
  await body.write(Buffer.from('hello\r\n'));
  assert.equal(sink.writes.length, 1);
  assert.equal(sink.text, `${PREFIX}Subject: hello\r\n`);
});

test('empty chunks are ignored', async () => {
  const { sink } = await feed(['', 'Subject: x\r\n', '', '\r\n']);
  assert.equal(sink.writes.length, 2);
  assert.equal(sink.text, `${PREFIX}Subject: x\r\n\r\n`);
});

test('RFC 5322 2.2.3: a first line starting with space or tab cannot fold into our fields: an empty line ends them', async () => {
  for (const first of [' ', '\t']) {
    const text = `${first}by evil; forged trace\r\nSubject: x\r\n\r\nbody\r\n`;
    for (const chunks of [[text], ...splits(text).filter((c) => c[0] !== '')]) {
      const { sink, facts } = await feed(chunks);
      assert.equal(sink.text, `${PREFIX}\r\n${text}`, JSON.stringify(chunks));
      assert.deepEqual(facts, { receivedCount: 0, hasMessageId: false, hasDate: false, hasFrom: false });
    }
    // On submission the added fields come first, then the empty line: they cannot be extended either.
    const { sink } = await feed([text], { addMissing: () => 'Date: now\r\n' });
    assert.equal(sink.text, `${PREFIX}Date: now\r\n\r\n${text}`);
  }
  // Only the very first octet matters: a folded line after a real field is an ordinary fold.
  const folded = 'Subject: a\r\n b\r\n\r\nx\r\n';
  assert.equal((await feed([folded])).sink.text, `${PREFIX}${folded}`);
  assert.equal((await feed(['', folded])).sink.text, `${PREFIX}${folded}`);
});
