/**
 * Session ticket keys shared by every worker (docs/workers.md, "TLS"): the primary holds the
 * source (server/ticket-keys.ts, rotated on tls.ticket_key_rotation_ms) and hands the current
 * keys to a worker that asks at start (a restarted one too), and pushes every rotation to all
 * workers, so a ticket one worker issued resumes on any other. Messages of their own tag over
 * the cluster IPC channel, beside ipc.ts's requests: a worker sends `want`, the primary answers
 * or pushes `keys`.
 * Trust: internal; the keys are secrets: they travel only over the IPC channel between the
 * primary and its own children, and are never logged nor written to disk.
 */
import { z } from 'zod';
import { TICKET_KEYS_BYTES, TicketKeys } from '../server/ticket-keys.js';

const TAG = 'sterna-ticket-keys';

const message = z.discriminatedUnion('t', [
  z.object({ tag: z.literal(TAG), t: z.literal('want') }),
  z.object({ tag: z.literal(TAG), t: z.literal('keys'), keys: z.base64() }),
]);
type TicketKeyMessage = z.infer<typeof message>;

function keysMessage(keys: Buffer): TicketKeyMessage {
  return { tag: TAG, t: 'keys', keys: keys.toString('base64') };
}

/** Anything that can post to one worker (a cluster Worker). */
interface WorkerPort {
  send(message: object): unknown;
}

/**
 * Primary side: answers `raw` if it is a worker's `want` (returns true for any message of ours).
 * Feed every message of a worker here.
 */
export function answerTicketKeys(keys: TicketKeys, worker: WorkerPort, raw: unknown): boolean {
  const parsed = message.safeParse(raw);
  if (!parsed.success) return false;
  if (parsed.data.t === 'want') post(worker, keysMessage(keys.current));
  return true;
}

/** Primary side: the new keys to every live worker. */
export function pushTicketKeys(keys: Buffer, workers: Iterable<WorkerPort>): void {
  const m = keysMessage(keys);
  for (const w of workers) post(w, m);
}

function post(worker: WorkerPort, m: TicketKeyMessage): void {
  try {
    worker.send(m);
  } catch {
    // That worker is gone; it asks again when it is restarted.
  }
}

/** The IPC end of a worker process (process itself). */
interface PrimaryPort {
  send?: (message: object) => unknown;
  on(event: 'message', listener: (m: unknown) => void): unknown;
  off(event: 'message', listener: (m: unknown) => void): unknown;
}

/**
 * Worker side: asks the primary for the current keys and resolves with a TicketKeys that follows
 * every later push. Rejects when no answer comes within `timeoutMs`.
 */
export function ticketKeysFromPrimary(port: PrimaryPort, timeoutMs = 30_000): Promise<TicketKeys> {
  return new Promise<TicketKeys>((resolve, reject) => {
    let keys: TicketKeys | undefined;
    const timer = setTimeout(() => {
      port.off('message', onMessage);
      reject(new Error(`no session ticket keys from the primary within ${timeoutMs} ms`));
    }, timeoutMs);
    timer.unref();
    function onMessage(raw: unknown): void {
      const parsed = message.safeParse(raw);
      if (!parsed.success || parsed.data.t !== 'keys') return;
      const buf = Buffer.from(parsed.data.keys, 'base64');
      if (buf.length !== TICKET_KEYS_BYTES) return;
      if (keys !== undefined) return keys.set(buf);
      clearTimeout(timer);
      keys = new TicketKeys(buf);
      resolve(keys);
    }
    port.on('message', onMessage);
    if (port.send === undefined) {
      clearTimeout(timer);
      reject(new Error('not a cluster worker: no IPC channel'));
      return;
    }
    port.send({ tag: TAG, t: 'want' } satisfies TicketKeyMessage);
  });
}
