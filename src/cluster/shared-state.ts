/**
 * The in-process state store (state/memory.ts: rate limits, greylisting, failed AUTH) shared by every
 * worker: the primary holds the one MemoryStore and saves it as a single-process Sterna does;
 * each worker reaches it through IpcStateStore, which keeps the StateStore interface
 * (state/store.ts), so the policy code cannot tell. take() stays all or nothing across workers
 * because the primary runs the requests one at a time on one map. With [state] redis set, the
 * workers talk to Redis directly and none of this is used.
 * Trust: internal; the requests come from Sterna's own workers, and are checked for shape.
 */
import { z } from 'zod';
import type { CounterRule, CounterView, CounterWindow, StateStore, TakeResult } from '../state/store.js';
import type { AuthLimits } from '../state/auth-failures.js';
import type { IpcChannel } from './ipc.js';

const authLimits = z.object({
  failureDelayMs: z.number(),
  maxFailures: z.number(),
  maxNetworkFailures: z.number(),
  windowMs: z.number(),
  lockoutMs: z.number(),
  maxDelayMs: z.number(),
});
const counterWindow = z.object({ ms: z.number().positive(), kind: z.enum(['fixed', 'sliding']) });
const stateRequest = z.discriminatedUnion('method', [
  z.object({
    method: z.literal('take'),
    rules: z.array(z.object({ key: z.string(), limit: z.number() })),
    amount: z.number(),
    window: counterWindow,
  }),
  z.object({ method: z.literal('peek'), key: z.string(), window: counterWindow }),
  z.object({ method: z.literal('counters'), prefix: z.string(), window: counterWindow }),
  z.object({ method: z.literal('get'), key: z.string() }),
  z.object({ method: z.literal('set'), key: z.string(), value: z.string(), ttlMs: z.number() }),
  z.object({ method: z.literal('delete'), key: z.string() }),
  z.object({
    method: z.literal('authLocked'),
    net: z.string(),
    pair: z.string().nullable(),
    limits: authLimits,
  }),
  z.object({ method: z.literal('authFailed'), net: z.string(), pair: z.string(), limits: authLimits }),
  z.object({ method: z.literal('authSucceeded'), net: z.string(), pair: z.string(), limits: authLimits }),
]);
type StateRequest = z.infer<typeof stateRequest>;

const takeResult = z.object({
  ok: z.boolean(),
  counts: z.array(z.number()),
  refused: z.number().optional(),
  retryAfterMs: z.number(),
});

/** The primary's side: runs one worker's request on the store. */
export async function serveStateRequest(store: StateStore, body: unknown): Promise<unknown> {
  const req = stateRequest.parse(body);
  switch (req.method) {
    case 'take':
      return store.take(req.rules, req.amount, req.window);
    case 'peek':
      return store.peek(req.key, req.window);
    case 'counters':
      return store.counters(req.prefix, req.window);
    case 'get':
      return store.get(req.key);
    case 'set':
      return store.set(req.key, req.value, req.ttlMs);
    case 'delete':
      return store.delete(req.key);
    case 'authLocked':
      return store.authLocked(req.net, req.pair, req.limits);
    case 'authFailed':
      return store.authFailed(req.net, req.pair, req.limits);
    case 'authSucceeded':
      return store.authSucceeded(req.net, req.pair, req.limits);
    default: {
      const never: never = req;
      throw new Error(`unhandled state request ${JSON.stringify(never)}`);
    }
  }
}

/** A worker's side: the StateStore whose data lives in the primary. */
export class IpcStateStore implements StateStore {
  readonly #ipc: IpcChannel;
  readonly description: string;

  constructor(ipc: IpcChannel, description: string) {
    this.#ipc = ipc;
    this.description = `${description}, shared by the workers through the primary`;
  }

  #ask(req: StateRequest): Promise<unknown> {
    return this.#ipc.request('state', req);
  }

  async take(rules: readonly CounterRule[], amount: number, window: CounterWindow): Promise<TakeResult> {
    const r = takeResult.parse(await this.#ask({ method: 'take', rules: [...rules], amount, window }));
    return {
      ok: r.ok,
      counts: r.counts,
      retryAfterMs: r.retryAfterMs,
      ...(r.refused !== undefined ? { refused: r.refused } : {}),
    };
  }

  async peek(key: string, window: CounterWindow): Promise<number> {
    return z.number().parse(await this.#ask({ method: 'peek', key, window }));
  }

  async counters(prefix: string, window: CounterWindow): Promise<CounterView[]> {
    return z
      .array(z.object({ key: z.string(), count: z.number() }))
      .parse(await this.#ask({ method: 'counters', prefix, window }));
  }

  async get(key: string): Promise<string | null> {
    return z
      .string()
      .nullable()
      .parse(await this.#ask({ method: 'get', key }));
  }

  async set(key: string, value: string, ttlMs: number): Promise<void> {
    await this.#ask({ method: 'set', key, value, ttlMs });
  }

  async delete(key: string): Promise<void> {
    await this.#ask({ method: 'delete', key });
  }

  async authLocked(net: string, pair: string | null, limits: AuthLimits): Promise<boolean> {
    return z.boolean().parse(await this.#ask({ method: 'authLocked', net, pair, limits }));
  }

  async authFailed(net: string, pair: string, limits: AuthLimits): Promise<number> {
    return z.number().parse(await this.#ask({ method: 'authFailed', net, pair, limits }));
  }

  async authSucceeded(net: string, pair: string, limits: AuthLimits): Promise<void> {
    await this.#ask({ method: 'authSucceeded', net, pair, limits });
  }

  /** The store is the primary's; it saves and closes it. */
  close(): Promise<void> {
    return Promise.resolve();
  }
}
