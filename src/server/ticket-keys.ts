/**
 * TLS session ticket keys (RFC 5077 4; TLS 1.3 tickets, RFC 8446 4.6.1): the 48 bytes a Node
 * SecureContext seals its tickets with (16 bytes key name, 16 HMAC, 16 AES). One TicketKeys
 * holds the current set and tells its listeners when it changes. It is either the source
 * (rotate(): makes new keys with crypto.randomBytes on a fixed interval; the cluster primary,
 * or a single-process Sterna) or a copy fed from outside (set(): a worker, from its primary,
 * cluster/ticket-keys.ts), so that every worker seals and opens tickets with the same keys.
 *
 * Node keeps ONE key set per context (SecureContext setTicketKeys takes exactly 48 bytes): a
 * ticket sealed under the previous set gets a full handshake after a rotation, which is why the
 * interval (tls.ticket_key_rotation_ms) is long against the ticket lifetime (300 s).
 *
 * Trust: the keys are secrets. They live in memory only: never logged, never written to disk.
 */
import { randomBytes } from 'node:crypto';

/** Size of a ticket key set as Node's SecureContext takes it. */
export const TICKET_KEYS_BYTES = 48;

export class TicketKeys {
  #current: Buffer;
  #timer: NodeJS.Timeout | undefined;
  readonly #listeners: ((keys: Buffer) => void)[] = [];

  /** `initial`: keys handed over (a worker); absent, fresh random ones. */
  constructor(initial?: Buffer) {
    this.#current = initial !== undefined ? checked(initial) : randomBytes(TICKET_KEYS_BYTES);
  }

  /** The keys to seal new tickets with. */
  get current(): Buffer {
    return this.#current;
  }

  /** Calls `listener` with every later key set. */
  onChange(listener: (keys: Buffer) => void): void {
    this.#listeners.push(listener);
  }

  /** Replaces the keys (a no-op when they are the same). */
  set(keys: Buffer): void {
    if (checked(keys).equals(this.#current)) return;
    this.#current = keys;
    for (const l of this.#listeners) l(keys);
  }

  /** Makes new random keys every `intervalMs` (the timer never holds the process open). */
  rotateEvery(intervalMs: number): void {
    this.stop();
    this.#timer = setInterval(() => this.set(randomBytes(TICKET_KEYS_BYTES)), intervalMs);
    this.#timer.unref();
  }

  /** Stops rotating; the current keys stay. */
  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

function checked(keys: Buffer): Buffer {
  if (keys.length !== TICKET_KEYS_BYTES)
    throw new Error(`session ticket keys must be ${TICKET_KEYS_BYTES} bytes, got ${keys.length}`);
  return keys;
}
