/**
 * The three listeners (smtp, submission, submissions) on their configured addresses, IPv4 and
 * IPv6, with connection limits in total and per client network (421 4.7.0 beyond them; an IPv4
 * address or an IPv6 /64, policy/client-network.ts), counted by server/connection-slots.ts (in
 * a cluster, across every worker: cluster/connection-leases.ts). Each accepted socket becomes a
 * Connection; the session hooks come from the caller.
 */
import cluster from 'node:cluster';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import type { SecureContext } from 'node:tls';
import type { Config } from '../config/schema.js';
import type { ListenerKind, TlsInfo } from '../message/envelope.js';
import type { Logger } from '../observability/log.js';
import type { MailEvents } from '../observability/mail-events.js';
import { clientNetworkKey } from '../policy/client-network.js';
import { formatReply, reply } from '../smtp/replies.js';
import { Session, type SessionConfig, type SessionHooks } from '../smtp/session.js';
import { Connection } from './connection.js';
import { LocalSlots, type ConnectionSlots, type SlotRefusal } from './connection-slots.js';

export interface ListenerDeps {
  config: Config;
  log: Logger;
  /** Builds the hooks for one session (they carry its logger, listener and client address). */
  hooks: (log: Logger, listener: ListenerKind, ip: string) => SessionHooks;
  secureContext: () => SecureContext | null;
  /** Metrics and recent events. */
  events?: MailEvents;
  /** Who counts the connections under [limits]; default: this process alone (LocalSlots). */
  slots?: ConnectionSlots;
}

export interface BoundAddress {
  listener: ListenerKind;
  address: string;
  port: number;
}

/** Splits "host:port" or "[v6]:port". */
export function parseHostPort(s: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:]+):(\d+)$/.exec(s);
  if (m === null) throw new Error(`bad listen address "${s}"`);
  return { host: m[1] ?? '', port: Number(m[2]) };
}

export class Listeners {
  readonly #deps: ListenerDeps;
  /**
   * Each listening server, with where it listens again after a pause (setAccepting): in a
   * cluster worker the options as first given (node:cluster finds the shared socket by them,
   * port 0 included), in one process the port it was bound to.
   */
  readonly #servers: { server: net.Server; again: net.ListenOptions }[] = [];
  readonly #connections = new Set<Connection>();
  readonly #slots: ConnectionSlots;
  /** One session configuration per listener kind, shared by its sessions. */
  readonly #sessionConfigs = new Map<ListenerKind, SessionConfig>();
  #total = 0;
  #sessionSeq = 0;
  /** SIGTERM: new connections get 421 4.3.2; open ones finish their transaction. */
  #draining = false;
  #whenEmpty: (() => void)[] = [];
  readonly #sidPrefix = randomBytes(3).toString('hex');
  #accepting = true;
  #closed = false;
  /** Servers listening again after a pause: their failure is logged once, by #applyAccepting. */
  readonly #relistening = new Set<net.Server>();
  /** setAccepting calls, one after the other. */
  #acceptChanges: Promise<void> = Promise.resolve();
  /** Open connections × milliseconds since #windowStart, up to #tallied (takeOccupancy). */
  #area = 0;
  #tallied = performance.now();
  #windowStart = this.#tallied;
  /** Told the open connection count after each accepted connection (cluster/accept-gate.ts). */
  onOpened: ((open: number) => void) | undefined;

  constructor(deps: ListenerDeps) {
    this.#deps = deps;
    this.#slots =
      deps.slots ??
      new LocalSlots({
        total: deps.config.limits.connections,
        perNetwork: deps.config.limits.connections_per_ip,
      });
  }

  get connectionCount(): number {
    return this.#total;
  }

  /**
   * The average number of open connections since the last call (or the start), weighted by
   * time: the load a cluster's accept gate balances (cluster/accept-gate.ts).
   */
  takeOccupancy(): number {
    const now = performance.now();
    this.#tally(now);
    const span = now - this.#windowStart;
    const average = span > 0 ? this.#area / span : this.#total;
    this.#area = 0;
    this.#windowStart = now;
    return average;
  }

  /**
   * Stops or resumes taking new connections on every listener; open connections go on. In a
   * cluster the listening socket is shared, and while this worker does not take connections the
   * others do: cluster/accept-gate.ts never pauses worker 0. A listener that cannot listen again
   * is logged and stays paused.
   */
  setAccepting(on: boolean): Promise<void> {
    this.#acceptChanges = this.#acceptChanges.then(() => this.#applyAccepting(on));
    return this.#acceptChanges;
  }

  get accepting(): boolean {
    return this.#accepting;
  }

  async #applyAccepting(on: boolean): Promise<void> {
    if (on === this.#accepting || this.#closed) return;
    this.#accepting = on;
    for (const { server, again } of this.#servers) {
      if (!on) {
        // Open connections keep running; only the listening handle goes.
        server.close();
        continue;
      }
      this.#relistening.add(server);
      await listenOn(server, again)
        .catch((err: unknown) =>
          this.#deps.log.error({ err, address: again.host, port: again.port }, 'cannot listen again'),
        )
        .finally(() => this.#relistening.delete(server));
    }
  }

  #tally(now: number): void {
    this.#area += this.#total * (now - this.#tallied);
    this.#tallied = now;
  }

  async start(): Promise<BoundAddress[]> {
    const bound: BoundAddress[] = [];
    const { listen } = this.#deps.config;
    const kinds: [ListenerKind, readonly string[]][] = [
      ['smtp', listen.smtp],
      ['submission', listen.submission],
      ['submissions', listen.submissions],
    ];
    for (const [kind, addrs] of kinds) {
      for (const a of addrs) {
        const { host, port } = parseHostPort(a);
        // allowHalfOpen: a client's FIN ends its input, not our replies (see Connection).
        const server = net.createServer(
          { pauseOnConnect: false, noDelay: true, allowHalfOpen: true },
          (socket) => this.#accept(kind, socket),
        );
        server.maxConnections = this.#deps.config.limits.connections + 100;
        const options: net.ListenOptions = { host, port, backlog: 1024 };
        await listenOn(server, options);
        server.on('error', (err) => {
          if (!this.#relistening.has(server)) this.#deps.log.error({ err, listener: kind }, 'listener error');
        });
        const addr = server.address();
        const boundPort = addr !== null && typeof addr === 'object' ? addr.port : port;
        if (addr !== null && typeof addr === 'object')
          bound.push({ listener: kind, address: addr.address, port: boundPort });
        this.#servers.push({ server, again: cluster.isWorker ? options : { ...options, port: boundPort } });
      }
    }
    return bound;
  }

  /**
   * Starts draining: from now on a new connection is answered 421 4.3.2 and closed, a session
   * outside a transaction ends with 421 4.3.2, one inside ends so once its transaction is over.
   * Resolves when no connection is left (the caller bounds the wait: limits.drain_timeout_ms).
   */
  drain(): Promise<void> {
    this.#draining = true;
    for (const c of this.#connections) c.drain();
    if (this.#connections.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#whenEmpty.push(resolve));
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#acceptChanges;
    // A paused server's close() calls back at once (not running); the others once drained.
    const closing = this.#servers.map(
      ({ server }) => new Promise<void>((resolve) => server.close(() => resolve())),
    );
    for (const c of this.#connections) c.shutdown();
    await Promise.all(closing);
  }

  #accept(kind: ListenerKind, socket: net.Socket): void {
    socket.on('error', () => undefined);
    const ip = socket.remoteAddress ?? 'unknown';
    const network = clientNetworkKey(ip);
    if (this.#draining) return this.#refuse(kind, socket, ip, network, 'SHUTTING_DOWN');
    const slot = this.#slots.acquire(network);
    if (slot instanceof Promise) void slot.then((refusal) => this.#admit(kind, socket, ip, network, refusal));
    else this.#admit(kind, socket, ip, network, slot);
  }

  #refuse(
    kind: ListenerKind,
    socket: net.Socket,
    ip: string,
    network: string,
    why: SlotRefusal | 'SHUTTING_DOWN',
  ): void {
    const { config, log } = this.#deps;
    const clog = log.child({ listener: kind, ip });
    if (why === 'SHUTTING_DOWN') clog.info('connection refused: draining');
    else
      clog.warn(
        {
          network,
          limit:
            why === 'TOO_MANY_CONNECTIONS' ? config.limits.connections : config.limits.connections_per_ip,
          key: why === 'TOO_MANY_CONNECTIONS' ? 'limits.connections' : 'limits.connections_per_ip',
        },
        'connection refused: limit reached',
      );
    const r = reply(why, { hostname: config.hostname });
    this.#deps.events?.connectionRefused({ listener: kind, ip }, r);
    // On an implicit TLS port a plain-text reply would be garbage to the client: just close.
    if (kind !== 'submissions') socket.end(formatReply(r));
    else socket.destroy();
    setTimeout(() => socket.destroy(), 1000).unref();
  }

  /** After the slot's answer (at once, or from the primary): refuse, or start the session. */
  #admit(
    kind: ListenerKind,
    socket: net.Socket,
    ip: string,
    network: string,
    refusal: SlotRefusal | null,
  ): void {
    if (refusal !== null) return this.#refuse(kind, socket, ip, network, refusal);
    // The answer may have come from the primary after the client left, or the server stopped.
    if (socket.destroyed || this.#closed || this.#draining) {
      this.#slots.release(network);
      if (this.#draining && !socket.destroyed) this.#refuse(kind, socket, ip, network, 'SHUTTING_DOWN');
      else socket.destroy();
      return;
    }
    const { config, log } = this.#deps;
    const port = socket.remotePort ?? 0;
    const sid = `${this.#sidPrefix}${(++this.#sessionSeq).toString(36)}`;
    const clog = log.child({ sid, listener: kind, ip });
    this.#tally(performance.now());
    this.#total++;
    this.onOpened?.(this.#total);
    let sessionConfig = this.#sessionConfigs.get(kind);
    if (sessionConfig === undefined) {
      sessionConfig = this.#sessionConfig(kind);
      this.#sessionConfigs.set(kind, sessionConfig);
    }
    const cfg = sessionConfig;
    const hooks = this.#deps.hooks(clog, kind, ip);
    const conn = new Connection(
      socket,
      {
        commandTimeoutMs: config.limits.command_timeout_ms,
        dataBlockTimeoutMs: config.limits.data_block_timeout_ms,
        dataTotalTimeoutMs: config.limits.data_total_timeout_ms,
        tlsHandshakeTimeoutMs: config.limits.tls_handshake_timeout_ms,
        textLineBytes: config.limits.text_line_bytes,
        messageBytes: config.limits.message_bytes,
        bareLineEndings: config.smtp.bare_line_endings,
        hostname: config.hostname,
        secureContext: this.#deps.secureContext,
        minTlsVersion: config.tls.min_version,
        ...(this.#deps.events !== undefined
          ? { observer: this.#deps.events.connection({ listener: kind, ip }) }
          : {}),
      },
      clog,
      (tls: TlsInfo | undefined) => new Session(cfg, hooks, { ip, port }, tls),
      () => {
        this.#connections.delete(conn);
        if (this.#connections.size === 0) for (const w of this.#whenEmpty.splice(0)) w();
        this.#tally(performance.now());
        this.#total--;
        this.#slots.release(network);
      },
    );
    this.#connections.add(conn);
    if (kind === 'submissions') conn.startTls();
    else conn.start();
  }

  #sessionConfig(kind: ListenerKind): SessionConfig {
    const { config } = this.#deps;
    return {
      hostname: config.hostname,
      banner: config.smtp.banner,
      listener: kind,
      limits: {
        commandLineBytes: config.limits.command_line_bytes,
        textLineBytes: config.limits.text_line_bytes,
        messageBytes: config.limits.message_bytes,
        recipients: config.limits.recipients,
        errors: config.limits.errors,
        receivedHeaders: config.limits.received_headers,
      },
      vrfy: config.smtp.vrfy,
      authMechanisms: config.auth.mechanisms,
      authAllowPlaintext: config.auth.allow_plaintext,
      authOnSmtp: config.auth.on_smtp_listener,
      tlsAvailable: this.#deps.secureContext() !== null,
      enforceSender: config.auth.enforce_sender,
      authservId: config.mailauth.authserv_id || config.hostname,
      ...(config.early_talkers.listeners.includes(kind)
        ? {
            earlyTalkers: {
              greetingDelayMs: config.early_talkers.greeting_delay_ms,
              pregreet: config.early_talkers.pregreet,
              improperPipelining: config.early_talkers.improper_pipelining,
            },
          }
        : {}),
    };
  }
}

/** server.listen(options), resolved once listening, rejected with its error. */
function listenOn(server: net.Server, options: net.ListenOptions): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options, () => {
      server.off('error', reject);
      resolve();
    });
  });
}
