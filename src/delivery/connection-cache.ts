/**
 * Outbound connection cache: idle SMTP client sessions kept open for the next message to the
 * same host, so a burst of messages to one destination does not pay a TCP, EHLO, STARTTLS and
 * AUTH exchange each (RFC 5321 allows several transactions per session, 3.3 and 4.1.1.5; the
 * sender resets before each one reused, see SmtpClientSession.send's `reset`). Sessions are
 * keyed by everything that makes them interchangeable (address, port, TLS policy, implicit TLS,
 * server name, AUTH user, TLS options object). A session is closed with QUIT after `idleMs`
 * unused, after `reuseLimit` transactions, when the cache holds `maxIdle` sessions (the oldest
 * goes), and at shutdown. Like Postfix's scache, idle sessions are taken last in, first out.
 * Trust: holds connections to untrusted servers but reads nothing from them while idle.
 */
import type tls from 'node:tls';
import type { SmtpClientSession } from './smtp-client.js';

export interface ConnectionCacheOptions {
  /** Transactions on one connection before it is closed; 1 (or less) turns reuse off. */
  reuseLimit: number;
  /** How long a session waits idle for the next message before QUIT; 0 turns reuse off. */
  idleMs: number;
  /** Idle sessions kept in total; parking one more QUITs the oldest. */
  maxIdle: number;
  /** How long a QUIT may wait for its reply before the connection is simply closed. Default 2000. */
  quitTimeoutMs?: number;
}

/** What makes two sessions interchangeable (the connection's own parameters, not the message's). */
export interface SessionKeyParts {
  address: string;
  port: number;
  tls: string;
  implicitTls: boolean;
  /** TLS server name (SNI, certificate check); undefined for an IP literal host. */
  servername: string | undefined;
  /** AUTH user name, if the session authenticated. */
  authUsername: string | undefined;
  /** Extra TLS options, compared by object identity. */
  tlsOptions: tls.ConnectionOptions | undefined;
}

interface Entry {
  key: string;
  session: SmtpClientSession;
  timer: NodeJS.Timeout;
}

/** Identity numbers of TLS option objects, so a key can name "this very object". */
const tlsOptionIds = new WeakMap<object, number>();
let nextTlsOptionId = 1;

/** The cache key for a session's connection parameters. */
export function sessionKey(p: SessionKeyParts): string {
  let tlsId = 0;
  if (p.tlsOptions !== undefined) {
    tlsId = tlsOptionIds.get(p.tlsOptions) ?? nextTlsOptionId++;
    tlsOptionIds.set(p.tlsOptions, tlsId);
  }
  // JSON keeps fields apart whatever characters they hold.
  return JSON.stringify([
    p.address.toLowerCase(),
    p.port,
    p.tls,
    p.implicitTls,
    p.servername?.toLowerCase() ?? null,
    p.authUsername ?? null,
    tlsId,
  ]);
}

export class ConnectionCache {
  readonly #o: ConnectionCacheOptions;
  /** Idle sessions by key, most recently parked last. */
  readonly #byKey = new Map<string, Entry[]>();
  /** Every idle session, oldest first (Set iteration is insertion order). */
  readonly #all = new Set<Entry>();
  /** Transactions run so far on each session the cache has seen. */
  readonly #transactions = new WeakMap<SmtpClientSession, number>();
  /** QUITs under way, awaited by closeAll. */
  readonly #quitting = new Set<Promise<void>>();
  #closing = false;

  constructor(o: ConnectionCacheOptions) {
    this.#o = o;
  }

  /** Idle sessions held now. */
  get size(): number {
    return this.#all.size;
  }

  /** Transactions run so far on `session`, as last reported to put(); 0 for a session never put. */
  transactions(session: SmtpClientSession): number {
    return this.#transactions.get(session) ?? 0;
  }

  /**
   * The most recently parked idle session for `key`, removed from the cache, or null. Sessions
   * whose connection has closed meanwhile (the server timed out) are dropped on the way.
   */
  take(key: string): SmtpClientSession | null {
    const list = this.#byKey.get(key);
    if (list === undefined) return null;
    let found: SmtpClientSession | null = null;
    for (let e = list.pop(); e !== undefined; e = list.pop()) {
      this.#forget(e);
      if (e.session.closedReason === null) {
        found = e.session;
        break;
      }
      e.session.close();
    }
    if (list.length === 0) this.#byKey.delete(key);
    return found;
  }

  /**
   * Gives back a session after a transaction; `transactionsSoFar` counts every transaction run
   * on it. Parks it idle, or QUITs it when it reached the reuse limit, reuse is off, its
   * connection closed, or the cache is closing. Resolves once parked or closed.
   */
  put(key: string, session: SmtpClientSession, transactionsSoFar: number): Promise<void> {
    this.#transactions.set(session, transactionsSoFar);
    const { reuseLimit, idleMs, maxIdle } = this.#o;
    if (session.closedReason !== null) {
      session.close();
      return Promise.resolve();
    }
    if (this.#closing || idleMs <= 0 || maxIdle <= 0 || transactionsSoFar >= reuseLimit) {
      return this.#quit(session);
    }
    const entry: Entry = {
      key,
      session,
      timer: setTimeout(() => {
        this.#remove(entry);
        void this.#quit(session);
      }, idleMs),
    };
    entry.timer.unref();
    let list = this.#byKey.get(key);
    if (list === undefined) {
      list = [];
      this.#byKey.set(key, list);
    }
    list.push(entry);
    this.#all.add(entry);
    for (const oldest of this.#all) {
      if (this.#all.size <= maxIdle) break;
      this.#remove(oldest);
      void this.#quit(oldest.session);
    }
    return Promise.resolve();
  }

  /** QUITs every idle session and waits for every QUIT under way; later put()s QUIT at once. */
  async closeAll(): Promise<void> {
    this.#closing = true;
    for (const e of [...this.#all]) {
      this.#remove(e);
      void this.#quit(e.session);
    }
    await Promise.all([...this.#quitting]);
  }

  /** Removes an entry from both indexes and stops its idle timer. */
  #remove(e: Entry): void {
    const list = this.#byKey.get(e.key);
    if (list !== undefined) {
      const i = list.indexOf(e);
      if (i !== -1) list.splice(i, 1);
      if (list.length === 0) this.#byKey.delete(e.key);
    }
    this.#forget(e);
  }

  #forget(e: Entry): void {
    clearTimeout(e.timer);
    this.#all.delete(e);
  }

  /** QUIT, waiting at most quitTimeoutMs for the reply, then close. Never rejects. */
  #quit(session: SmtpClientSession): Promise<void> {
    const limitMs = this.#o.quitTimeoutMs ?? 2000;
    let timer: NodeJS.Timeout | undefined;
    const bounded = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, limitMs);
      timer.unref();
    });
    const p = Promise.race([session.quit(), bounded]).then(() => {
      clearTimeout(timer);
      session.close();
      this.#quitting.delete(p);
    });
    this.#quitting.add(p);
    return p;
  }
}
