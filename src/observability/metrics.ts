/**
 * Prometheus metrics (prom-client; text exposition format 0.0.4) for one server instance: one
 * Registry per SternaMetrics, never prom-client's global default registry, so several servers
 * in one process (the tests) keep apart. Names follow the Prometheus conventions: `sterna_`
 * prefix, base units (`_seconds`, `_bytes`), counters end in `_total`. prom-client's default
 * process and Node.js metrics (memory, CPU, event-loop lag, GC) go on the same registry.
 *
 * Hot path: the calls the server makes per reply, per connection and per message are a Map
 * lookup and an increment on a pre-bound label child; label values are built once, on the first
 * use of a combination, from bounded sets (listener kinds, reply codes of the one table in
 * smtp/replies.ts, TLS versions, a top-N of destination domains).
 *
 * Queue gauges are collected on scrape, from a snapshot function the queue side supplies.
 * Trust: internal; label values never come from clients except through the bounded sets above.
 */
import {
  collectDefaultMetrics,
  Counter,
  Gauge,
  Histogram,
  Registry,
  type Counter as CounterType,
  type Histogram as HistogramType,
} from 'prom-client';

/** How a session ended, as sterna_smtp_sessions_total{outcome} counts it. */
export type SessionOutcome =
  | 'quit' // the client sent QUIT (221)
  | 'client-closed' // the client closed without QUIT
  | 'timeout' // a timeout of RFC 5321 4.5.3.2 (421 4.4.2)
  | 'server-closed' // the server closed it: too many errors, a protocol error (421)
  | 'shutdown' // the server shut down or drained (421 4.3.2)
  | 'refused' // refused at connect: connection limits or draining
  | 'tls-failed'; // the TLS handshake of implicit TLS or STARTTLS failed

export type DeliveryResult = 'delivered' | 'deferred' | 'failed';

/** Queue figures taken at scrape time. */
export interface QueueSnapshot {
  /** Messages by state: "active" (a delivery pass runs), "held", "deferred", "pending". */
  byState: Record<string, number>;
  /** Age of the oldest queued message in seconds; 0 when the queue is empty. */
  oldestAgeSeconds: number;
}

export interface MetricsOptions {
  /** Destination domains with a label of their own; the rest are "other". */
  topDomains: number;
  /** Attempts a domain needs before it gets a label of its own (one-off domains stay "other"). */
  admitAfter?: number;
}

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const DELIVERY_BUCKETS = [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 5 * 24 * 3600];
const SYNC_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];

const NON_COUNTER_TOTALS = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
];

type Child = { inc(value?: number): void };

/** A map of label children filled on first use (the sets are bounded by construction). */
class Children<K> {
  readonly #map = new Map<K, Child>();
  readonly #make: (key: K) => Child;

  constructor(make: (key: K) => Child) {
    this.#make = make;
  }

  get(key: K): Child {
    let c = this.#map.get(key);
    if (c === undefined) {
      c = this.#make(key);
      this.#map.set(key, c);
    }
    return c;
  }
}

/**
 * Which destination domains get a label: the first `limit` domains to reach `admitAfter`
 * attempts since start (a busy domain reaches it first), the rest "other". A domain keeps its
 * label once given (a counter must not move between series). Candidate counts are bounded:
 * beyond 16 × limit candidates, the table is cleared and counting starts again.
 */
export class DomainLabels {
  readonly #limit: number;
  readonly #admitAfter: number;
  readonly #admitted = new Set<string>();
  readonly #candidates = new Map<string, number>();

  constructor(limit: number, admitAfter: number) {
    this.#limit = limit;
    this.#admitAfter = admitAfter;
  }

  label(domain: string): string {
    if (this.#admitted.has(domain)) return domain;
    if (this.#admitted.size >= this.#limit) return 'other';
    const n = (this.#candidates.get(domain) ?? 0) + 1;
    if (n >= this.#admitAfter) {
      this.#candidates.delete(domain);
      this.#admitted.add(domain);
      return domain;
    }
    if (this.#candidates.size >= 16 * Math.max(1, this.#limit)) this.#candidates.clear();
    this.#candidates.set(domain, n);
    return 'other';
  }
}

export class SternaMetrics {
  readonly registry = new Registry();
  readonly #connections: Children<string>;
  readonly #sessions: Children<SessionOutcome>;
  /** Reply children by code, then enhanced code ("" when the reply has none). */
  readonly #replies = new Map<number, Children<string>>();
  readonly #replyCounter: CounterType<'class' | 'code' | 'enhanced'>;
  readonly #accepted: Child;
  readonly #refused: Children<string>;
  readonly #refusedCounter: CounterType<'stage' | 'enhanced'>;
  readonly #bytes: Child;
  readonly #eod: HistogramType;
  readonly #tlsIn: Children<string>;
  readonly #tlsOut: Children<string>;
  readonly #authFailures: Children<string>;
  readonly #lockouts: Child;
  readonly #mailauth: Children<string>;
  readonly #policyRefusals: Children<string>;
  readonly #filterVerdicts: Children<string>;
  readonly #attempts: Children<string>;
  readonly #attemptCounter: CounterType<'result' | 'destination'>;
  readonly #deliveryLatency: HistogramType;
  readonly #sync: HistogramType;
  readonly #domains: DomainLabels;
  #queue: (() => QueueSnapshot) | null = null;
  #certExpiry: (() => number | null) | null = null;

  constructor(opts: MetricsOptions) {
    const registers = [this.registry];
    this.#domains = new DomainLabels(opts.topDomains, opts.admitAfter ?? 3);
    collectDefaultMetrics({ register: this.registry });
    // prom-client names three gauges "_total", which promtool (and the conventions) refuse for
    // a non-counter; the same figures stay by type in nodejs_active_{handles,requests,resources}.
    for (const name of NON_COUNTER_TOTALS) this.registry.removeSingleMetric(name);

    const connections = new Counter({
      name: 'sterna_smtp_connections_total',
      help: 'SMTP connections accepted, by listener (smtp, submission, submissions).',
      labelNames: ['listener'],
      registers,
    });
    this.#connections = new Children((l) => connections.labels(l));
    const sessions = new Counter({
      name: 'sterna_smtp_sessions_total',
      help: 'SMTP sessions ended, by how they ended.',
      labelNames: ['outcome'],
      registers,
    });
    this.#sessions = new Children((o) => sessions.labels(o));
    this.#replyCounter = new Counter({
      name: 'sterna_smtp_replies_total',
      help: 'SMTP replies sent, by code class, code and enhanced status code (RFC 3463).',
      labelNames: ['class', 'code', 'enhanced'],
      registers,
    });
    const accepted = new Counter({
      name: 'sterna_messages_accepted_total',
      help: 'Messages accepted and queued (250 after end of data), every way in over SMTP.',
      registers,
    });
    this.#accepted = accepted;
    this.#refusedCounter = new Counter({
      name: 'sterna_messages_refused_total',
      help: 'Messages, senders and recipients refused, by stage (sender, rcpt, data) and enhanced status code (the reason; docs/replies.md).',
      labelNames: ['stage', 'enhanced'],
      registers,
    });
    const refused = this.#refusedCounter;
    this.#refused = new Children((key) => {
      const [stage = '', enhanced = ''] = key.split(' ');
      return refused.labels(stage, enhanced);
    });
    this.#bytes = new Counter({
      name: 'sterna_received_bytes_total',
      help: 'Octets of message data in accepted messages.',
      registers,
    });
    this.#eod = new Histogram({
      name: 'sterna_smtp_end_of_data_to_reply_seconds',
      help: 'Time from the end of a message (final dot or last BDAT chunk) to its 250 reply: checks and the durable commit.',
      buckets: LATENCY_BUCKETS,
      registers,
    });
    const tlsIn = new Counter({
      name: 'sterna_tls_inbound_handshakes_total',
      help: 'TLS handshakes completed by clients (STARTTLS, implicit TLS), by protocol version.',
      labelNames: ['version'],
      registers,
    });
    this.#tlsIn = new Children((v) => tlsIn.labels(v));
    const tlsOut = new Counter({
      name: 'sterna_tls_outbound_transactions_total',
      help: 'Outbound SMTP transactions, by TLS protocol version ("none": plain text).',
      labelNames: ['version'],
      registers,
    });
    this.#tlsOut = new Children((v) => tlsOut.labels(v));
    const authFailures = new Counter({
      name: 'sterna_auth_failures_total',
      help: 'SMTP AUTH attempts refused (bad credentials), by result.',
      labelNames: ['result'],
      registers,
    });
    this.#authFailures = new Children((r) => authFailures.labels(r));
    this.#lockouts = new Counter({
      name: 'sterna_auth_lockouts_total',
      help: 'SMTP AUTH attempts refused because the client or user is locked out.',
      registers,
    });
    const mailauth = new Counter({
      name: 'sterna_mailauth_results_total',
      help: 'Results of inbound mail authentication, by method (spf, dkim: one per signature, dmarc, arc) and result.',
      labelNames: ['method', 'result'],
      registers,
    });
    this.#mailauth = new Children((key) => {
      const sp = key.indexOf(' ');
      return mailauth.labels(key.slice(0, sp), key.slice(sp + 1));
    });
    const policy = new Counter({
      name: 'sterna_policy_refusals_total',
      help: 'Clients, senders and recipients refused by a policy check (list, dnsbl, greylist, rate-limit, ...).',
      labelNames: ['check'],
      registers,
    });
    this.#policyRefusals = new Children((check) => policy.labels(check));
    const filters = new Counter({
      name: 'sterna_filter_verdicts_total',
      help: 'Content filter verdicts at the end of data, by filter name and verdict.',
      labelNames: ['filter', 'verdict'],
      registers,
    });
    this.#filterVerdicts = new Children((key) => {
      const sp = key.indexOf(' ');
      return filters.labels(key.slice(0, sp), key.slice(sp + 1));
    });
    this.#attemptCounter = new Counter({
      name: 'sterna_delivery_attempts_total',
      help: 'Delivery attempts per recipient, by result and destination (a top-N of domains, "local", the rest "other").',
      labelNames: ['result', 'destination'],
      registers,
    });
    const attempts = this.#attemptCounter;
    this.#attempts = new Children((key) => {
      const sp = key.indexOf(' ');
      return attempts.labels(key.slice(0, sp), key.slice(sp + 1));
    });
    this.#deliveryLatency = new Histogram({
      name: 'sterna_delivery_latency_seconds',
      help: 'Time from a message being queued to the delivery of a recipient.',
      buckets: DELIVERY_BUCKETS,
      registers,
    });
    this.#sync = new Histogram({
      name: 'sterna_spool_sync_seconds',
      help: 'Duration of each fdatasync of the spool log.',
      buckets: SYNC_BUCKETS,
      registers,
    });
    // One snapshot per scrape: taken by the first gauge, read by the second (collected in order).
    let snap: QueueSnapshot | undefined;
    const queued: Gauge<'state'> = new Gauge({
      name: 'sterna_queue_messages',
      help: 'Messages in the queue, by state (active, pending, deferred, held).',
      labelNames: ['state'],
      registers,
      collect: () => {
        snap = this.#queue?.();
        queued.reset();
        if (snap === undefined) return;
        for (const state of ['active', 'pending', 'deferred', 'held'])
          queued.labels(state).set(snap.byState[state] ?? 0);
      },
    });
    const expiry: Gauge = new Gauge({
      name: 'sterna_tls_certificate_expiry_timestamp_seconds',
      help: 'When the certificate of the SMTP listeners (the leaf of [tls] cert_file) expires, in seconds since the epoch.',
      registers,
      // With workers (docs/workers.md) each reports the same certificate: one value, not a sum.
      aggregator: 'first',
      collect: () => {
        const ms = this.#certExpiry?.() ?? null;
        if (ms !== null) expiry.set(ms / 1000);
      },
    });
    const oldest: Gauge = new Gauge({
      name: 'sterna_queue_oldest_message_age_seconds',
      help: 'Age of the oldest message in the queue (0 when it is empty).',
      registers,
      // With workers, the oldest of every worker's spool (the queue gauge above is their sum).
      aggregator: 'max',
      collect: () => {
        oldest.set(snap?.oldestAgeSeconds ?? 0);
      },
    });
  }

  /** The expiry (ms since the epoch) of the server's certificate, read at each scrape. */
  setCertificateSource(fn: () => number | null): void {
    this.#certExpiry = fn;
  }

  /** Where the queue gauges come from (called at each scrape). */
  setQueueSource(fn: () => QueueSnapshot): void {
    this.#queue = fn;
  }

  connection(listener: string): void {
    this.#connections.get(listener).inc();
  }

  sessionEnded(outcome: SessionOutcome): void {
    this.#sessions.get(outcome).inc();
  }

  /** One reply sent: a lookup by code and enhanced code, then an increment. */
  reply(code: number, enhanced: string | undefined): void {
    let byEnhanced = this.#replies.get(code);
    if (byEnhanced === undefined) {
      const counter = this.#replyCounter;
      const cls = `${Math.floor(code / 100)}xx`;
      const c = String(code);
      byEnhanced = new Children((e) => counter.labels(cls, c, e === '' ? 'none' : e));
      this.#replies.set(code, byEnhanced);
    }
    byEnhanced.get(enhanced ?? '').inc();
  }

  /** A message accepted and queued, `bytes` of data. */
  messageAccepted(bytes: number): void {
    this.#accepted.inc();
    this.#bytes.inc(bytes);
  }

  /** `seconds` from a message's end (final dot, last BDAT chunk) to its 250. */
  eodReplied(seconds: number): void {
    this.#eod.observe(seconds);
  }

  /** A message (stage "data"), sender or recipient refused with this enhanced code. */
  refused(stage: 'data' | 'rcpt' | 'sender', enhanced: string | undefined): void {
    this.#refused.get(`${stage} ${enhanced ?? 'none'}`).inc();
  }

  tlsInbound(version: string): void {
    this.#tlsIn.get(version).inc();
  }

  tlsOutbound(version: string): void {
    this.#tlsOut.get(version).inc();
  }

  authFailed(result: 'failed' | 'temporary-failure'): void {
    this.#authFailures.get(result).inc();
  }

  authLockedOut(): void {
    this.#lockouts.inc();
  }

  /** One result of inbound mail authentication (values from a fixed set: bounded labels). */
  mailauthResult(method: 'spf' | 'dkim' | 'dmarc' | 'arc', result: string): void {
    this.#mailauth.get(`${method} ${result}`).inc();
  }

  /** A policy check refused (its stable reason: list, dnsbl, greylist, rate-limit, ...). */
  policyRefused(check: string): void {
    this.#policyRefusals.get(check).inc();
  }

  /** A content filter's verdict; `filter` is its configured name (no spaces: config names). */
  filterVerdict(filter: string, verdict: string): void {
    this.#filterVerdicts.get(`${filter.replace(/ /g, '_')} ${verdict}`).inc();
  }

  /** One recipient's delivery attempt; `destination` "local" or the recipient's domain. */
  deliveryAttempt(result: DeliveryResult, destination: string, latencySeconds?: number): void {
    const label = destination === 'local' ? 'local' : this.#domains.label(destination);
    this.#attempts.get(`${result} ${label}`).inc();
    if (latencySeconds !== undefined) this.#deliveryLatency.observe(latencySeconds);
  }

  spoolSynced(seconds: number): void {
    this.#sync.observe(seconds);
  }

  /** The exposition text for /metrics. */
  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
