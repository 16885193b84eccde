/**
 * Two small pieces the mail authentication streams share (check.ts verifies, dkim-sign.ts
 * signs): finding the end of a message's header section (RFC 5322 2.1: the first empty line)
 * across chunks while counting its octets, and writing to a stream with backpressure.
 * Trust level: the octets are the sender's; only counted and searched here.
 */
import type { Writable } from 'node:stream';

const HEADER_END = [Buffer.from('\n\r\n'), Buffer.from('\n\n')];

/** Follows a message, chunk by chunk, to the end of its header section. */
export class HeaderSection {
  /** Octets of the header section seen so far (up to its last line's LF). */
  bytes = 0;
  ended = false;
  /** The last two octets seen (to find the end across chunks). */
  #tail = Buffer.alloc(0);

  /** Takes the next chunk; returns whether the header section has ended. */
  scan(chunk: Buffer): boolean {
    if (this.ended) return true;
    const joined = Buffer.concat([this.#tail, chunk]);
    let end = -1;
    for (const marker of HEADER_END) {
      const at = joined.indexOf(marker);
      if (at >= 0 && (end < 0 || at < end)) end = at;
    }
    if (end >= 0) {
      this.ended = true;
      this.bytes += Math.max(0, end - this.#tail.length);
    } else {
      this.bytes += chunk.length;
      this.#tail = joined.subarray(Math.max(0, joined.length - 2));
    }
    return this.ended;
  }
}

/**
 * Writes `chunk` to `stream`; when its buffer is full, waits until it drains, closes, or
 * `alsoDone` settles (the consumer finished early).
 */
export async function writeWithBackpressure(
  stream: Writable,
  chunk: Buffer,
  alsoDone?: Promise<unknown>,
): Promise<void> {
  if (stream.write(chunk)) return;
  await new Promise<void>((resolve) => {
    const done = (): void => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
    void alsoDone?.then(done);
  });
}
