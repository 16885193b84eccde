/**
 * Queue ids: the one name a message carries everywhere (250 reply, Received header, logs,
 * queue CLI, DSNs; DESIGN.md rule 4).
 *
 * Format: 16 characters of Crockford base 32 (digits and uppercase letters without I, L, O, U),
 * so ids are safe in file names, case-insensitive systems and log greps:
 *
 *   TTTTTTTTT CCC RRRR
 *   │         │   └ 20 random bits: ids stay unique when the clock goes back across a restart;
 *   │         │     with several workers (src/cluster/), worker i of n draws them from the i-th
 *   │         │     of n equal ranges, so two workers never make the same id
 *   │         └ 15-bit counter within one millisecond (monotonic inside this process)
 *   └ milliseconds since the epoch (45 bits, good until the year 3084)
 *
 * The alphabet is in ASCII order, so comparing two ids as strings compares their arrival:
 * within one process every new id sorts after the previous one, even in the same millisecond.
 * Trust level: internal; no input from the network is parsed here except by isQueueId.
 */
import { randomInt } from 'node:crypto';

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const TIME_CHARS = 9;
const COUNTER_CHARS = 3;
const RANDOM_CHARS = 4;
const COUNTER_LIMIT = 32 ** COUNTER_CHARS;
const RANDOM_LIMIT = 32 ** RANDOM_CHARS;
export const QUEUE_ID_LENGTH = TIME_CHARS + COUNTER_CHARS + RANDOM_CHARS;
const QUEUE_ID_RE = /^[0-9A-HJKMNP-TV-Z]{16}$/;

function encode(value: number, width: number): string {
  let out = '';
  let v = value;
  for (let i = 0; i < width; i++) {
    out = ALPHABET[v % 32]! + out;
    v = Math.floor(v / 32);
  }
  return out;
}

function decode(text: string): number {
  let v = 0;
  for (const ch of text) v = v * 32 + ALPHABET.indexOf(ch);
  return v;
}

let lastMs = 0;
let counter = 0;
/** This process's range of the random field: [randomBase, randomBase + randomSpan). */
let randomBase = 0;
let randomSpan = RANDOM_LIMIT;

/**
 * Worker `index` of `count` (src/cluster/): from now on this process draws the random field of
 * its ids from the index-th of count equal ranges. Ids are unique inside one process (time and
 * counter are monotonic), so disjoint ranges make them unique across the workers too.
 */
export function partitionQueueIds(index: number, count: number): void {
  if (!Number.isInteger(count) || count < 1 || count > RANDOM_LIMIT)
    throw new RangeError(`bad worker count ${count}`);
  if (!Number.isInteger(index) || index < 0 || index >= count)
    throw new RangeError(`bad worker index ${index}`);
  randomSpan = Math.floor(RANDOM_LIMIT / count);
  randomBase = index * randomSpan;
}

/** The worker whose range holds this id's random field, for `count` workers (tests and logs). */
export function queueIdPartition(qid: string, count: number): number {
  const random = decode(qid.slice(TIME_CHARS + COUNTER_CHARS));
  return Math.min(count - 1, Math.floor(random / Math.floor(RANDOM_LIMIT / count)));
}

/**
 * A new queue id for a message arriving at `now` (ms since the epoch). Strictly greater, as a
 * string, than every id returned before by this process and every id passed to noteQueueId.
 */
export function newQueueId(now: number): string {
  const ms = Math.max(0, Math.floor(now));
  if (ms > lastMs) {
    lastMs = ms;
    counter = 0;
  } else if (++counter >= COUNTER_LIMIT) {
    // More than 32,768 ids in one millisecond, or a clock that went back: borrow the next one.
    lastMs += 1;
    counter = 0;
  }
  return (
    encode(lastMs, TIME_CHARS) +
    encode(counter, COUNTER_CHARS) +
    encode(randomBase + randomInt(randomSpan), RANDOM_CHARS)
  );
}

/**
 * Makes later ids sort after `qid` (called by the spool with the newest id it recovered, so a
 * clock that went back during a restart does not produce ids older than those on disk).
 */
export function noteQueueId(qid: string): void {
  if (!isQueueId(qid)) return;
  const ms = decode(qid.slice(0, TIME_CHARS));
  const c = decode(qid.slice(TIME_CHARS, TIME_CHARS + COUNTER_CHARS));
  if (ms > lastMs || (ms === lastMs && c > counter)) {
    lastMs = ms;
    counter = c;
  }
}

/** True for a string in the queue id format (it does not say the message exists). */
export function isQueueId(s: string): boolean {
  return QUEUE_ID_RE.test(s);
}

/** The arrival time (ms since the epoch) encoded in a queue id. */
export function queueIdTime(qid: string): number {
  return decode(qid.slice(0, TIME_CHARS));
}
