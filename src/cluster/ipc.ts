/**
 * Requests and answers between the primary and its workers over the cluster IPC channel
 * (node:cluster's process.send, JSON-serialised): a small request/response layer with ids, one
 * handler per kind, a timeout, and commands that need no answer (drain, stop, reload).
 * Both ends use the same class: a worker asks the primary (state store, queue fan-out,
 * metrics, readiness), the primary asks a worker (its queue, its metrics, its readiness). A
 * worker also reports its load, and the primary tells it whether to take new connections
 * (accept-gate.ts), and leases it slots for new connections under the cluster-wide connection
 * limits (connection-leases.ts).
 * Trust: internal; both ends are Sterna processes of one tree. Messages are still checked for
 * shape, and anything that is not a Sterna message (tag `sterna`) is ignored.
 */
import { z } from 'zod';
import type { LeaseAsk, LeaseGrant, LeaseKey } from './connection-leases.js';

/** What a request asks for. */
export type RequestKind = 'queue' | 'state' | 'metrics' | 'admin' | 'ready';
/** Orders from the primary to a worker. */
export type Command = 'drain' | 'stop' | 'reload';

const TAG = 'sterna-ipc';

const ipcMessage = z.discriminatedUnion('t', [
  z.object({
    tag: z.literal(TAG),
    t: z.literal('req'),
    id: z.number(),
    kind: z.enum(['queue', 'state', 'metrics', 'admin', 'ready']),
    body: z.unknown(),
  }),
  z.object({
    tag: z.literal(TAG),
    t: z.literal('res'),
    id: z.number(),
    ok: z.boolean(),
    body: z.unknown(),
    error: z.string().optional(),
  }),
  z.object({ tag: z.literal(TAG), t: z.literal('cmd'), cmd: z.enum(['drain', 'stop', 'reload']) }),
  z.object({ tag: z.literal(TAG), t: z.literal('ready') }),
  // A worker's load, for the accept gate (accept-gate.ts): its average open connections.
  z.object({ tag: z.literal(TAG), t: z.literal('load'), open: z.number().nonnegative() }),
  // The primary's answer to it: take new connections, or leave them to the other workers.
  z.object({ tag: z.literal(TAG), t: z.literal('accept'), on: z.boolean() }),
  // Connection slots (connection-leases.ts): a worker asks, the primary grants, reclaims, and
  // the worker gives back (answered: in answer to a reclaim). A null network is the total.
  z.object({
    tag: z.literal(TAG),
    t: z.literal('lease-ask'),
    id: z.number().int(),
    network: z.string(),
    total: z.boolean(),
    net: z.boolean(),
  }),
  z.object({
    tag: z.literal(TAG),
    t: z.literal('lease-grant'),
    id: z.number().int(),
    network: z.string(),
    total: z.number().int().nonnegative(),
    net: z.number().int().nonnegative(),
  }),
  z.object({ tag: z.literal(TAG), t: z.literal('lease-reclaim'), network: z.string().nullable() }),
  z.object({
    tag: z.literal(TAG),
    t: z.literal('lease-return'),
    network: z.string().nullable(),
    n: z.number().int().nonnegative(),
    answered: z.boolean(),
  }),
]);
type IpcMessage = z.infer<typeof ipcMessage>;

/** The other end went away, or did not answer in time. */
export class IpcError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'IpcError';
  }
}

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

type Handler = (body: unknown) => Promise<unknown>;

export class IpcChannel {
  readonly #send: (message: object) => void;
  readonly #timeoutMs: number;
  readonly #pending = new Map<number, Pending>();
  readonly #handlers = new Map<RequestKind, Handler>();
  #nextId = 1;
  #closed = false;
  onCommand: (cmd: Command) => void = () => undefined;
  onReady: () => void = () => undefined;
  onLoad: (open: number) => void = () => undefined;
  onAccept: (on: boolean) => void = () => undefined;
  onLeaseAsk: (ask: LeaseAsk) => void = () => undefined;
  onLeaseGrant: (grant: LeaseGrant) => void = () => undefined;
  onLeaseReclaim: (key: LeaseKey) => void = () => undefined;
  onLeaseReturn: (key: LeaseKey, n: number, answered: boolean) => void = () => undefined;

  /** `send`: process.send or worker.send; it may throw once the other end is gone. */
  constructor(send: (message: object) => void, timeoutMs = 30_000) {
    this.#send = send;
    this.#timeoutMs = timeoutMs;
  }

  handle(kind: RequestKind, handler: Handler): void {
    this.#handlers.set(kind, handler);
  }

  /**
   * Asks the other end; rejects with IpcError when it is gone or silent for `timeoutMs` (the
   * channel's timeout unless given: a readiness probe waits less than a queue operation).
   */
  request(kind: RequestKind, body: unknown, timeoutMs = this.#timeoutMs): Promise<unknown> {
    if (this.#closed) return Promise.reject(new IpcError('the other process is gone'));
    const id = this.#nextId++;
    return new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new IpcError(`no answer to a ${kind} request within ${timeoutMs} ms`));
      }, timeoutMs);
      timer.unref();
      this.#pending.set(id, { resolve, reject, timer });
      this.#post({ tag: TAG, t: 'req', id, kind, body });
    });
  }

  command(cmd: Command): void {
    this.#post({ tag: TAG, t: 'cmd', cmd });
  }

  ready(): void {
    this.#post({ tag: TAG, t: 'ready' });
  }

  /** A worker tells the primary its load (accept-gate.ts). */
  load(open: number): void {
    this.#post({ tag: TAG, t: 'load', open });
  }

  /** The primary tells a worker whether to take new connections (accept-gate.ts). */
  accept(on: boolean): void {
    this.#post({ tag: TAG, t: 'accept', on });
  }

  /** A worker asks the primary for connection slots (connection-leases.ts). */
  leaseAsk(ask: LeaseAsk): void {
    this.#post({ tag: TAG, t: 'lease-ask', ...ask });
  }

  /** The primary's answer; false when the worker is gone (the slots were not handed over). */
  leaseGrant(grant: LeaseGrant): boolean {
    return this.#post({ tag: TAG, t: 'lease-grant', ...grant });
  }

  /** False when the worker is gone: no answer will come. */
  leaseReclaim(key: LeaseKey): boolean {
    return this.#post({ tag: TAG, t: 'lease-reclaim', network: key });
  }

  leaseReturn(key: LeaseKey, n: number, answered: boolean): void {
    this.#post({ tag: TAG, t: 'lease-return', network: key, n, answered });
  }

  /** Feed every 'message' event here; returns false for a message that is not ours. */
  receive(raw: unknown): boolean {
    const parsed = ipcMessage.safeParse(raw);
    if (!parsed.success) return false;
    const m = parsed.data;
    switch (m.t) {
      case 'req':
        void this.#answer(m.id, m.kind, m.body);
        return true;
      case 'res': {
        const p = this.#pending.get(m.id);
        if (p === undefined) return true; // timed out meanwhile
        this.#pending.delete(m.id);
        clearTimeout(p.timer);
        if (m.ok) p.resolve(m.body);
        else p.reject(new Error(m.error ?? 'the request failed'));
        return true;
      }
      case 'cmd':
        this.onCommand(m.cmd);
        return true;
      case 'ready':
        this.onReady();
        return true;
      case 'load':
        this.onLoad(m.open);
        return true;
      case 'accept':
        this.onAccept(m.on);
        return true;
      case 'lease-ask':
        this.onLeaseAsk({ id: m.id, network: m.network, total: m.total, net: m.net });
        return true;
      case 'lease-grant':
        this.onLeaseGrant({ id: m.id, network: m.network, total: m.total, net: m.net });
        return true;
      case 'lease-reclaim':
        this.onLeaseReclaim(m.network);
        return true;
      case 'lease-return':
        this.onLeaseReturn(m.network, m.n, m.answered);
        return true;
      default: {
        const never: never = m;
        throw new Error(`unhandled message ${JSON.stringify(never)}`);
      }
    }
  }

  /** The other end is gone: every open request fails, later ones fail at once. */
  close(reason: string): void {
    this.#closed = true;
    for (const [id, p] of this.#pending) {
      clearTimeout(p.timer);
      p.reject(new IpcError(reason));
      this.#pending.delete(id);
    }
  }

  async #answer(id: number, kind: RequestKind, body: unknown): Promise<void> {
    const handler = this.#handlers.get(kind);
    try {
      if (handler === undefined) throw new Error(`no handler for ${kind} requests`);
      const result = await handler(body);
      this.#post({ tag: TAG, t: 'res', id, ok: true, body: result ?? null });
    } catch (err) {
      this.#post({
        tag: TAG,
        t: 'res',
        id,
        ok: false,
        body: null,
        error: err instanceof Error ? err.message : String(err),
      });
    }
  }

  /** Sends `message`; false when the other end is gone. */
  #post(message: IpcMessage): boolean {
    if (this.#closed) return false;
    try {
      this.#send(message);
      return true;
    } catch {
      // The channel closed under us; the owner learns it from 'exit' or 'disconnect'.
      return false;
    }
  }
}
