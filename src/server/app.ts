/**
 * Builds a running Sterna from a validated Config: TLS material, user store, aliases, spool,
 * queue manager and listeners, and the session hooks that connect them. main.ts and the tests
 * both start Sterna through here, so tests run exactly what production runs.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { DovecotAuthClient } from '../auth/dovecot.js';
import { AuthThrottle } from '../auth/lockout.js';
import { OAuthVerifier } from '../auth/oauth.js';
import { JwksFile, JwksUrl, type KeySource } from '../auth/oauth-jwks.js';
import { claimedUser } from '../auth/sasl.js';
import { mayUseSender, type AuthContext, type PasswordBackend } from '../auth/store.js';
import { UserStore, type VerifyResult } from '../auth/users.js';
import type { Config } from '../config/schema.js';
import { CachingResolver, NodeDnsResolver, type DnsResolver } from '../delivery/dns.js';
import { maildirOwnership } from '../delivery/local/ownership.js';
import { LmtpProbe } from '../delivery/lmtp-probe.js';
import { buildRelays, parseLmtpTransport } from '../delivery/relays.js';
import { Router } from '../delivery/router.js';
import { MailAuth } from '../mailauth/check.js';
import type { AuthResults } from '../mailauth/results.js';
import { DkimKeyStore } from '../mailauth/dkim-keys.js';
import { DkimSigning, type SigningOrigin } from '../mailauth/dkim-sign.js';
import { ArcSealer } from '../mailauth/arc-seal.js';
import { Srs } from '../mailauth/srs.js';
import { loadSrsSecrets, srsSecretFile } from '../mailauth/srs-secret.js';
import type { ForwardingServices } from '../queue/forward.js';
import { startDmarcReporting } from '../mailauth/dmarc-report-start.js';
import { Lifecycle, type ReadyState } from '../admin/health.js';
import type { AdminListener } from '../admin/listener.js';
import { localAdminData, type AdminData, type SpoolQueue } from '../admin/admin-data.js';
import { startAdmin } from '../admin/start.js';
import { buildContentFilters } from '../filters/build.js';
import type { ContentFilters } from '../filters/pipeline.js';
import type { Logger } from '../observability/log.js';
import { MailEvents } from '../observability/mail-events.js';
import { SternaMetrics } from '../observability/metrics.js';
import { RecentEvents } from '../observability/recent.js';
import { buildAliasTable, loadAliasFile, type AliasTable } from '../policy/aliases.js';
import { ConnectionPolicy, type PolicyServices } from '../policy/connection-policy.js';
import { Dnsbl } from '../policy/dnsbl.js';
import { Greylist } from '../policy/greylist.js';
import { PolicyLists } from '../policy/lists.js';
import { NetworkList } from '../policy/networks.js';
import { RateLimits } from '../policy/rate-limits.js';
import { openStateStore } from '../state/open.js';
import type { StateStore } from '../state/store.js';
import { addressKey, checkRecipient, type RecipientPolicy } from '../policy/recipient.js';
import { HeldSet } from '../queue/held.js';
import { startHttpApi, type HttpApi } from '../api/listener.js';
import { MaildropPickup, prepareMaildropDirs } from '../queue/maildrop-pickup.js';
import { QueueManager } from '../queue/manager.js';
import { Spool, SpoolError, type RecoveryReport } from '../queue/spool.js';
import type { Credentials } from '../auth/sasl.js';
import type { ListenerKind } from '../message/envelope.js';
import { formatMailbox, type Mailbox } from '../smtp/address.js';
import { reply, type Reply } from '../smtp/replies.js';
import type {
  AuthOutcome,
  CheckContext,
  FilterContext,
  FilterOutcome,
  ClientView,
  MessageCheck,
  MessageSink,
  PolicyContext,
  PolicyVerdict,
  RecipientVerdict,
  SessionHooks,
} from '../smtp/session.js';
import { workerSpoolDirs } from '../cluster/spool-dirs.js';
import { localQueueOps, type QueueOps } from '../cluster/queue-merge.js';
import { ControlServer, prepareControlDir } from './control.js';
import { Listeners, type BoundAddress } from './listeners.js';
import type { ConnectionSlots } from './connection-slots.js';
import { TicketKeys } from './ticket-keys.js';
import { ensureTlsMaterial, tlsFilesConfig, TlsContextProvider } from './tls.js';

export interface RunningSterna {
  addresses: BoundAddress[];
  /** The SMTP listeners' load and whether they take new connections (cluster/accept-gate.ts). */
  listeners: Pick<Listeners, 'takeOccupancy' | 'setAccepting' | 'onOpened' | 'accepting'>;
  spool: Spool;
  manager: QueueManager;
  users: UserStore;
  tls: TlsContextProvider;
  recovery: RecoveryReport;
  /** A queue operation on this process's spools, merged (the control socket, a cluster's primary). */
  queueOps: QueueOps;
  /** This process's metrics as prom-client JSON (a cluster's primary aggregates them). */
  metricsJson(): Promise<unknown>;
  /** This process's dashboard data (admin/admin-data.ts; a cluster's primary merges them). */
  adminData: AdminData;
  /** This process's readiness: its listeners and its own spool directory (a cluster's primary asks every worker). */
  readiness(): Promise<ReadyState>;
  /** The HTTP submission API's bound addresses ([http_api] listen; none by default). */
  httpApi: HttpApi['addresses'];
  /** The admin listener's bound addresses ([admin] listen; none by default). */
  admin: AdminListener['addresses'];
  /** Metrics and recent events of this server. */
  events: MailEvents;
  /**
   * SIGTERM: not ready any more, new SMTP connections get 421 4.3.2, open transactions may
   * finish for limits.drain_timeout_ms. Resolves true when every session ended in time.
   */
  drain(): Promise<boolean>;
  /** The policy state store ([state]): counters and greylisting. */
  state: StateStore;
  /** The rate limits (sterna limits, the HTTP API). */
  rates: RateLimits;
  /** Re-reads certificates, aliases and list files (SIGHUP); `next`: the configuration as re-read. */
  reload(next?: Config): Promise<void>;
  close(): Promise<void>;
}

/**
 * How this process runs as worker `index` of `count` (src/cluster/worker.ts); absent: one
 * process, as before. A worker opens its own spool (cluster/spool-dirs.ts), uses the state
 * store the primary shares, runs no control socket (the primary's serves every worker), and
 * answers the admin API's queue operations and /metrics for every worker through the primary.
 */
export interface WorkerRole {
  index: number;
  count: number;
  /** The state store shared through the primary; null: open [state] here (Redis). */
  state: StateStore | null;
  /** A queue operation on every worker's spools, merged (the admin API). */
  clusterQueue: QueueOps;
  /** /metrics of every worker, aggregated. */
  clusterMetrics: () => Promise<string>;
  /** The dashboard data of every worker, merged (cluster/admin-merge.ts). */
  clusterAdmin?: AdminData;
  /** /readyz for every worker (cluster/readiness.ts). */
  clusterReadiness?: () => Promise<ReadyState>;
  /** The session ticket keys the primary hands every worker (cluster/ticket-keys.ts). */
  ticketKeys: TicketKeys;
  /** Slots for new connections under [limits], leased from the primary (cluster/connection-leases.ts). */
  connectionSlots?: ConnectionSlots;
}

export async function startSterna(config: Config, log: Logger, role?: WorkerRole): Promise<RunningSterna> {
  // Metrics and recent events ([admin]); kept whether or not the admin listener runs.
  const events = new MailEvents(
    new SternaMetrics({ topDomains: config.admin.metrics_top_domains }),
    new RecentEvents(config.admin.recent_events),
  );
  const lifecycle = new Lifecycle();
  // First, before anything runs: a control directory other users could reach stops start-up.
  await prepareControlDir(config.data_dir);
  // So is a maildrop (`sterna sendmail`, docs/sendmail.md) that is not ours.
  const maildropDirs = await prepareMaildropDirs(config.data_dir, log);
  const material = await ensureTlsMaterial(tlsFilesConfig(config), log);
  // One process makes and rotates its own ticket keys; a worker gets the cluster's from its primary.
  const ticketKeys = role?.ticketKeys ?? new TicketKeys();
  if (role === undefined) ticketKeys.rotateEvery(config.tls.ticket_key_rotation_ms);
  const tls = new TlsContextProvider(material, {
    minVersion: config.tls.min_version,
    logger: log,
    ticketKeys,
  });
  tls.watch();

  // The DKIM keys first: a key file that is missing, open or unreadable stops start-up.
  const dkimKeys = await DkimKeyStore.load(config);
  const dkim = new DkimSigning(
    dkimKeys,
    {
      signTrustedNetworks: config.dkim.sign_trusted_networks,
      signOwnMail: config.dkim.sign_own_mail,
      maxHeaderBytes: config.dkim.max_header_bytes,
    },
    log,
  );
  const users = await UserStore.open(config.auth.users_file, { logger: log });
  let aliases: AliasTable = await loadAliases(config);
  const transports = Object.entries(config.transport).map(([d, t]) => [d.toLowerCase(), t] as const);
  const localDomains = new Set([
    ...config.local_domains.map((d) => d.toLowerCase()),
    ...transports.filter(([, t]) => t === 'local').map(([d]) => d),
  ]);
  const discardDomains = new Set(transports.filter(([, t]) => t === 'discard').map(([d]) => d));
  const lmtpDomains = new Set(
    transports.filter(([, t]) => typeof t === 'string' && t.startsWith('lmtp:')).map(([d]) => d),
  );
  // Forwarded mail ([forwarding]): SRS (its secret file made at the first start) and ARC sealing.
  const srs = config.forwarding.srs
    ? new Srs({
        domain: config.forwarding.srs_domain || config.hostname,
        secrets: await loadSrsSecrets(srsSecretFile(config)),
        maxAgeDays: config.forwarding.srs_max_age_days,
      })
    : null;
  const forwarding: ForwardingServices = {
    srs,
    arc: config.forwarding.arc_seal
      ? new ArcSealer({
          keys: dkimKeys,
          hostname: config.hostname,
          authservId: config.mailauth.authserv_id || config.hostname,
        })
      : null,
    isLocalDomain: (d) => localDomains.has(d.toLowerCase()),
    maxHeaderBytes: config.mailauth.max_header_bytes,
  };
  const isMailbox = (address: string): boolean =>
    users.has(address) || address.toLowerCase() === config.local_delivery.postmaster.toLowerCase();
  const policy: RecipientPolicy = {
    localDomains,
    discardDomains,
    lmtpDomains,
    isMailbox,
    aliases: () => aliases,
    trusted: new NetworkList(config.relay.trusted_networks),
    srs,
  };
  const auth = await buildAuth(config, users, localDomains, log);

  // This process's spool first, then any spool an earlier run with more workers left, which
  // this process drains (cluster/spool-dirs.ts).
  const spoolDirs = await workerSpoolDirs(config.spool.dir, role?.index ?? 0, role?.count ?? 1);
  const spools: OpenedSpool[] = [];
  for (const dir of spoolDirs) {
    const opened = await openSpool(config, dir, log, events).catch(async (err: unknown) => {
      for (const o of spools) await o.spool.close();
      throw err;
    });
    spools.push(opened);
  }
  const [own, ...adopted] = spools;
  if (own === undefined) throw new Error('no spool directory');
  const { spool, held, report } = own;
  // /readyz of this process: its listeners, and the spool directory it writes to.
  const readiness = (): Promise<ReadyState> => lifecycle.readiness(own.dir);
  for (const o of adopted)
    log.warn(
      { spool: o.dir, messages: o.spool.size },
      'draining a spool an earlier run with more workers left',
    );

  const router = new Router({
    localDomains,
    discardDomains,
    lmtpDomains,
    postmaster: config.local_delivery.postmaster,
    isMailbox,
    aliases: () => aliases,
    srs,
  });
  // One resolver (the [dns] servers, cache and timeouts) for outbound delivery and mail authentication.
  const dns = new CachingResolver(
    new NodeDnsResolver({
      servers: config.dns.servers,
      timeoutMs: config.dns.timeout_ms,
      tries: config.dns.tries,
    }),
    { now: Date.now },
  );
  // DMARC aggregate reports ([dmarc_reports], docs/mail-auth.md): evaluations recorded, sent daily.
  const dmarcReports = await startDmarcReporting(config, {
    spool,
    dkim,
    dns,
    log,
    worker: role?.index ?? 0,
  }).catch(async (err: unknown) => {
    for (const o of spools) await o.spool.close();
    throw err;
  });
  const mailauth = new MailAuth({
    authservId: config.mailauth.authserv_id || config.hostname,
    listeners: config.mailauth.listeners,
    allowPartialBody: config.mailauth.allow_partial_body,
    minRsaKeyBits: config.mailauth.min_rsa_key_bits,
    timeoutMs: config.mailauth.timeout_ms,
    maxHeaderBytes: config.mailauth.max_header_bytes,
    enforcement: {
      dmarcRejectAction: config.mailauth.dmarc_reject_action,
      dmarcQuarantineAction: config.mailauth.dmarc_quarantine_action,
      spfFailAction: config.mailauth.spf_fail_action,
      temperrorAction: config.mailauth.temperror_action,
    },
    exempt: config.mailauth.exempt,
    dns,
    onResults: (r) => countAuthResults(events.metrics, r),
    ...(dmarcReports !== null ? { onDmarcEvaluation: (e) => dmarcReports.record(e) } : {}),
  });
  const filters = buildContentFilters(config.filters, config.hostname);
  filters.onVerdict = (filter, verdict) => events.metrics.filterVerdict(filter, verdict);
  const newManager = (spool: Spool, held: HeldSet): QueueManager =>
    new QueueManager({
      spool,
      held,
      router,
      log,
      hostname: config.hostname,
      maildirRoot: config.local_delivery.maildir_root,
      maildirOwnership: maildirOwnership(config.local_delivery),
      maxActive: config.spool.max_active_messages,
      localConcurrency: config.local_delivery.concurrency,
      localThreads: config.local_delivery.threads,
      retryMs: config.local_delivery.retry_ms,
      dkim,
      events,
      forwarding,
      outbound: {
        onTransactionTls: (version) => events.metrics.tlsOutbound(version),
        dns,
        port: config.outbound.port,
        tls: config.outbound.tls,
        tlsPolicies: new Map(Object.entries(config.outbound.tls_policy)),
        ...(config.outbound.tls_ca_file !== undefined
          ? { tlsOptions: { ca: readFileSync(config.outbound.tls_ca_file, 'utf8') } }
          : {}),
        connectionReuseLimit: config.outbound.connection_reuse_limit,
        connectionIdleMs: config.outbound.connection_idle_ms,
        recipientsPerTransaction: config.outbound.recipients_per_transaction,
        timeouts: {
          connectMs: config.outbound.connect_timeout_ms,
          greetingMs: config.outbound.greeting_timeout_ms,
          commandMs: config.outbound.command_timeout_ms,
          dataInitMs: config.outbound.data_init_timeout_ms,
          dataBlockMs: config.outbound.data_block_timeout_ms,
          dataEndMs: config.outbound.data_end_timeout_ms,
        },
        concurrencyTotal: config.outbound.concurrency_total,
        concurrencyPerDestination: config.outbound.concurrency_per_destination,
        retry: {
          firstRetryMs: config.queue.first_retry_ms,
          maxBackoffMs: config.queue.max_backoff_ms,
          maxLifetimeMs: config.queue.max_lifetime_ms,
          jitter: config.queue.jitter,
          delayWarningMs: config.queue.delay_warning_ms,
        },
        // Our exact listener addresses (a wildcard bind names no address): an MX there loops.
        // Not loopback in general: peers on 127.0.0.x other than ours are other servers.
        isOwnAddress: (ip) => ownAddresses.has(ip.toLowerCase()),
        // transport entries that are relay tables: those domains go to the relay, not their MX.
        relays: buildRelays(config.transport, config.outbound.tls),
        isOwnEndpoint: (ip, port) =>
          addresses.some(
            (a) =>
              a.port === port &&
              (a.address.toLowerCase() === ip.toLowerCase() ||
                // A wildcard listener takes loopback connections too.
                ((a.address === '0.0.0.0' || a.address === '::') && /^(127\.|::1$)/.test(ip))),
          ),
      },
    });
  const manager = newManager(spool, held);
  const managers = [manager, ...adopted.map((o) => newManager(o.spool, o.held))];
  /** Every spool with its manager, for the queue gauges and the dashboard (admin/admin-data.ts). */
  const queues: SpoolQueue[] = spools.map((o, i) => ({ spool: o.spool, manager: managers[i] ?? manager }));
  const closeSpools = async (): Promise<void> => {
    for (const o of spools) await o.spool.close();
  };

  // Abuse defences (src/policy/, docs/abuse.md): lists, DNSBL, greylisting, rate limits.
  const sharedState = role?.state ?? null;
  const state = await (
    sharedState !== null ? Promise.resolve(sharedState) : openStateStore(config, log)
  ).catch(async (err: unknown) => {
    await dmarcReports?.close();
    await closeSpools();
    throw err;
  });
  const lists = await PolicyLists.open(config.lists, log).catch(async (err: unknown) => {
    await state.close();
    await dmarcReports?.close();
    await closeSpools();
    throw err;
  });
  const rates = new RateLimits(config.rate_limits, state);
  // Failed AUTH counted in the state store: one count for every worker (and node, with Redis).
  const throttle = new AuthThrottle(
    {
      failureDelayMs: config.auth.failure_delay_ms,
      maxFailures: config.auth.max_failures,
      maxNetworkFailures: config.auth.max_failures_per_network,
      windowMs: config.auth.lockout_window_ms,
      lockoutMs: config.auth.lockout_ms,
      now: Date.now,
    },
    state,
  );
  const g = config.greylist;
  const policyServices: PolicyServices = {
    lists,
    dnsbl: new Dnsbl({
      zones: config.dnsbl.zones,
      threshold: config.dnsbl.threshold,
      timeoutMs: config.dnsbl.timeout_ms,
      resolver: dns,
      log,
    }),
    dnsblListeners: config.dnsbl.listeners,
    greylist: g.enabled
      ? new Greylist({
          delayMs: g.delay_ms,
          retryWindowMs: g.retry_window_ms,
          passTtlMs: g.pass_ttl_ms,
          trustAfter: g.trust_after,
          trustMs: g.trust_ms,
          ipv4Prefix: g.ipv4_prefix,
          ipv6Prefix: g.ipv6_prefix,
          store: state,
          now: Date.now,
        })
      : null,
    greylistListeners: g.listeners,
    rates,
    trusted: (ip) => policy.trusted.has(ip),
    onStoreError: config.state.on_error,
    hostname: config.hostname,
    onRefusal: (check) => events.metrics.policyRefused(check),
  };
  const lmtpProbe = config.lmtp.verify_recipients ? buildLmtpProbe(config, dns) : null;
  const shared: SharedServices = {
    policy,
    router,
    throttle,
    users,
    spool,
    mailauth,
    auth,
    dkim,
    lmtpProbe,
    events,
    filters,
    policyServices,
  };
  const hooks = (slog: Logger, kind: ListenerKind, ip: string): SessionHooks =>
    new AppHooks(shared, slog, kind, ip);

  const listeners = new Listeners({
    config,
    log,
    hooks,
    secureContext: () => tls.context,
    events,
    ...(role?.connectionSlots !== undefined ? { slots: role.connectionSlots } : {}),
  });
  const addresses = await listeners.start();
  lifecycle.listenersStarted();
  const ownAddresses = new Set(
    addresses.map((a) => a.address.toLowerCase()).filter((a) => a !== '0.0.0.0' && a !== '::'),
  );
  // Started once the listeners are bound, so that loop detection knows our addresses; messages
  // committed before this are found in the spool listing.
  for (const m of managers) m.start();
  // Mail that `sterna sendmail` left in the maildrop, now and while we run (one worker picks up).
  const pickup =
    role === undefined || role.index === 0
      ? MaildropPickup.start({ config, spool, log, dkim, rates, filters }, maildropDirs)
      : null;
  const stopManagers = async (): Promise<void> => {
    for (const m of managers) await m.stop();
  };
  /** What runs by now, to stop (in this order) if a later part cannot start. */
  const stopStarted = [
    () => pickup?.close(),
    () => listeners.close(),
    stopManagers,
    () => dmarcReports?.close(),
    closeSpools,
    () => lists.close(),
    () => state.close(),
    () => users.close(),
    () => tls.close(),
    () => ticketKeys.stop(),
  ];
  // Applications POST messages here (docs/http-api.md); queued like submission.
  const httpApi = await startHttpApi({
    config,
    log,
    tls,
    users,
    policy,
    spool,
    dkim,
    rates,
    filters,
    draining: () => lifecycle.draining,
  }).catch(async (err: unknown) => {
    await unwind(stopStarted);
    throw err;
  });
  /** Every queue operation on this process's spools (its own and those it drains). */
  const queueOps = localQueueOps(managers, {
    log,
    extras: {
      limits: () => rates.counts(),
      ...(dmarcReports !== null ? { dmarcReport: () => dmarcReports.runNow() } : {}),
    },
  });
  // `sterna queue` talks to the managers through this socket (docs/operations.md); with
  // workers, the primary's socket serves them all (cluster/primary.ts).
  const control =
    role !== undefined
      ? null
      : await ControlServer.start(config.data_dir, queueOps, log).catch((err: unknown) => {
          log.error({ err }, 'control socket not available; `sterna queue` cannot reach this server');
          return null;
        });
  // /metrics, /healthz, /readyz and the admin API ([admin] listen; docs/operations.md).
  const admin = await startAdmin({
    config,
    log,
    tls,
    lifecycle,
    events,
    manager,
    spool,
    queues,
    adminData: role?.clusterAdmin ?? ((q) => localAdminData({ events, queues }, q)),
    readiness: role?.clusterReadiness ?? readiness,
    users,
    queueOps: role?.clusterQueue ?? queueOps,
    ...(role !== undefined ? { metricsText: role.clusterMetrics } : {}),
  }).catch(async (err: unknown) => {
    await unwind([() => control?.close(), () => httpApi.close(), ...stopStarted]);
    throw err;
  });

  return {
    addresses,
    listeners,
    spool,
    manager,
    users,
    tls,
    recovery: report,
    queueOps,
    metricsJson: () => events.metrics.registry.getMetricsAsJSON(),
    adminData: (q) => localAdminData({ events, queues }, q),
    readiness,
    httpApi: httpApi.addresses,
    admin: admin.addresses,
    events,
    async drain() {
      lifecycle.startDraining();
      log.info({ timeout_ms: config.limits.drain_timeout_ms }, 'draining: open transactions may finish');
      // No new mail on any path from here: the listeners answer 421, the HTTP API 503, and what
      // `sterna sendmail` drops now waits in the maildrop for the next start (a file being
      // picked up is finished first).
      const pickupStopped = pickup?.close() ?? Promise.resolve();
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<false>((resolve) => {
        timer = setTimeout(() => resolve(false), config.limits.drain_timeout_ms);
      });
      const drained = await Promise.race([
        Promise.all([listeners.drain(), pickupStopped]).then(() => true),
        timedOut,
      ]);
      clearTimeout(timer);
      if (!drained) log.warn('drain timeout (limits.drain_timeout_ms): closing the sessions left');
      return drained;
    },
    state,
    rates,
    async reload(next?: Config) {
      await tls.reload();
      await lists.reload();
      await auth.oauthKeys?.reload();
      try {
        // The aliases of the configuration as re-read (inline table and file), else as started.
        aliases = await loadAliases(next ?? config);
      } catch (err) {
        log.error({ err }, 'aliases not reloaded; keeping the previous table');
      }
    },
    async close() {
      await admin.close();
      await listeners.close();
      await httpApi.close();
      await control?.close();
      await pickup?.close();
      await stopManagers();
      await dmarcReports?.close();
      await closeSpools();
      lists.close();
      await state.close();
      users.close();
      auth.dovecot?.close();
      tls.close();
      ticketKeys.stop();
    },
  };
}

/** A spool opened with its held set. */
interface OpenedSpool {
  dir: string;
  spool: Spool;
  held: HeldSet;
  report: RecoveryReport;
}

/** Opens (and recovers) the spool in `dir` and its held set. */
async function openSpool(config: Config, dir: string, log: Logger, events: MailEvents): Promise<OpenedSpool> {
  const { spool, report } = await Spool.open({
    dir,
    segmentBytes: config.spool.segment_bytes,
    fsync: config.spool.fsync,
    logger: log,
    onSync: (seconds) => events.metrics.spoolSynced(seconds),
  });
  log.info({ ...report, spool: dir }, 'spool opened');
  const live = new Set(spool.list().map((m) => m.qid));
  const held = await HeldSet.load(dir, {
    fsync: config.spool.fsync,
    live: (qid) => live.has(qid),
  }).catch(async (err: unknown) => {
    await spool.close();
    throw err;
  });
  return { dir, spool, held, report };
}

/** One message's mail-authentication results into sterna_mailauth_results_total. */
function countAuthResults(m: SternaMetrics, r: AuthResults): void {
  m.mailauthResult('spf', r.spf.result);
  for (const d of r.dkim) m.mailauthResult('dkim', d.result);
  if (r.dkim.length === 0) m.mailauthResult('dkim', 'none');
  m.mailauthResult('dmarc', r.dmarc.result);
  m.mailauthResult('arc', r.arc.result);
}

/** Runs the stop steps one after another (a start-up that failed half way). */
async function unwind(steps: readonly (() => unknown)[]): Promise<void> {
  for (const step of steps) await step();
}

async function loadAliases(config: Config): Promise<AliasTable> {
  const fromFile = config.aliases_file === '' ? {} : await loadAliasFile(config.aliases_file);
  return buildAliasTable({ ...fromFile, ...config.aliases });
}

/** The authentication backends chosen by [auth]. */
interface AuthServices {
  /** Checks PLAIN, LOGIN (and CRAM-MD5 for the users file). */
  passwords: PasswordBackend;
  dovecot?: DovecotAuthClient;
  /** Present when OAUTHBEARER or XOAUTH2 is enabled. */
  oauth?: OAuthVerifier;
  oauthKeys?: KeySource;
  /** May this token user log in at all (auth.oauth.users)? */
  oauthUserAllowed(user: string): boolean;
  localDomains: ReadonlySet<string>;
}

async function buildAuth(
  config: Config,
  users: UserStore,
  localDomains: ReadonlySet<string>,
  log: Logger,
): Promise<AuthServices> {
  const a = config.auth;
  const dovecot =
    a.backend === 'dovecot'
      ? new DovecotAuthClient({
          socket: a.dovecot.socket,
          service: a.dovecot.service,
          timeoutMs: a.dovecot.timeout_ms,
          log,
        })
      : undefined;
  const o = a.oauth;
  let oauthKeys: KeySource | undefined;
  let oauth: OAuthVerifier | undefined;
  if (a.mechanisms.includes('OAUTHBEARER') || a.mechanisms.includes('XOAUTH2')) {
    oauthKeys =
      o.jwks_file !== ''
        ? await JwksFile.open(o.jwks_file, log)
        : new JwksUrl(o.jwks_url, {
            timeoutMs: o.jwks_timeout_ms,
            cacheMs: o.jwks_cache_ms,
            refreshMinMs: o.jwks_refresh_min_ms,
          });
    oauth = new OAuthVerifier({
      issuer: o.issuer,
      audience: o.audience,
      userClaim: o.user_claim,
      algorithms: o.algorithms,
      clockSkewMs: o.clock_skew_ms,
      scope: o.scope,
      openidConfiguration: o.openid_configuration,
      keys: oauthKeys,
    });
  }
  const domainOf = (address: string): string => address.slice(address.lastIndexOf('@') + 1);
  return {
    passwords: dovecot ?? users,
    ...(dovecot !== undefined ? { dovecot } : {}),
    ...(oauth !== undefined ? { oauth } : {}),
    ...(oauthKeys !== undefined ? { oauthKeys } : {}),
    oauthUserAllowed: (user) =>
      o.users === 'local_domains' ? localDomains.has(domainOf(user)) : users.has(user),
    localDomains,
  };
}

/** What every session's hooks share; built once. */
interface SharedServices {
  policy: RecipientPolicy;
  router: Router;
  throttle: AuthThrottle;
  users: UserStore;
  spool: Spool;
  mailauth: MailAuth;
  filters: ContentFilters;
  auth: AuthServices;
  dkim: DkimSigning;
  policyServices: PolicyServices;
  events: MailEvents;
  /** Recipient verification for LMTP domains ([lmtp] verify_recipients); null when off. */
  lmtpProbe: { probe: LmtpProbe; unavailable: 'tempfail' | 'accept' } | null;
}

/** The LMTP routes of `transport` and a prober for their recipients. */
function buildLmtpProbe(config: Config, dns: DnsResolver): SharedServices['lmtpProbe'] {
  const routes = new Map(
    Object.entries(config.transport).flatMap(([domain, t]) => {
      const route = typeof t === 'string' ? parseLmtpTransport(t) : null;
      return route === null ? [] : [[domain.toLowerCase(), route] as const];
    }),
  );
  if (routes.size === 0) return null;
  const timeout = config.lmtp.verify_timeout_ms;
  const probe = new LmtpProbe({
    routes,
    dns,
    hostname: config.hostname,
    timeouts: {
      connectMs: timeout,
      greetingMs: timeout,
      commandMs: timeout,
      dataInitMs: timeout,
      dataBlockMs: timeout,
      dataEndMs: timeout,
    },
    positiveMs: config.lmtp.verify_positive_ms,
    negativeMs: config.lmtp.verify_negative_ms,
    now: Date.now,
  });
  return { probe, unavailable: config.lmtp.verify_unavailable };
}

/**
 * Session events logged at debug, not info: each accepted MAIL and RCPT. An accepted message's
 * `queued` line names its sender and recipients, and a transaction the client leaves unfinished
 * is logged at info as `transaction abandoned` with them (smtp/session.ts abort()). Two lines
 * fewer per message: at info, each line cost about 1.5 % of Sterna's CPU per message.
 */
const DEBUG_EVENTS: ReadonlySet<string> = new Set(['mail', 'rcpt']);

/**
 * The session hooks: one small object per connection (the shared services and the session's
 * logger), with the behaviour on the prototype, so an idle connection costs a few bytes here.
 */
class AppHooks implements SessionHooks {
  readonly #s: SharedServices;
  readonly #log: Logger;
  readonly #listener: ListenerKind;
  readonly #ip: string;
  /** The session's policy state (allow-list hits, DNSBL lookups), made at the first question. */
  #policyState: ConnectionPolicy | null = null;

  constructor(shared: SharedServices, log: Logger, listener: ListenerKind, ip: string) {
    this.#s = shared;
    this.#log = log;
    this.#listener = listener;
    this.#ip = ip;
  }

  #policy(): ConnectionPolicy {
    this.#policyState ??= new ConnectionPolicy(this.#s.policyServices, this.#log, this.#listener);
    return this.#policyState;
  }

  checkConnect(ctx: PolicyContext): Promise<PolicyVerdict> {
    return this.#policy()
      .connect(ctx)
      .then((v) => this.#counted(v));
  }

  checkHelo(ctx: PolicyContext): Promise<PolicyVerdict> {
    return this.#policy()
      .helo(ctx)
      .then((v) => this.#counted(v));
  }

  checkSender(sender: string, ctx: PolicyContext): Promise<PolicyVerdict> {
    return this.#policy()
      .sender(sender, ctx)
      .then((v) => this.#counted(v));
  }

  /** A refusal at connect, HELO or MAIL counts in sterna_policy_refusals_total by its check. */
  #counted(v: PolicyVerdict): PolicyVerdict {
    if (v.kind === 'refuse') this.#s.events.metrics.policyRefused(v.reason);
    return v;
  }

  now(): number {
    return Date.now();
  }

  nonce(): string {
    return randomBytes(12).toString('hex');
  }

  async checkRecipient(
    rcpt: Mailbox,
    ctx: { authUser: string | undefined; client: ClientView; sender?: string },
  ): Promise<RecipientVerdict> {
    const relay = checkRecipient(this.#s.policy, rcpt, ctx);
    if (relay.kind === 'reject') return relay;
    const verdict = await this.#policy().recipient(addressKey(rcpt), {
      authUser: ctx.authUser,
      ip: ctx.client.ip,
      sender: ctx.sender ?? '',
    });
    // Last, as Postfix orders reject_unverified_recipient: the LMTP server is asked only for a
    // recipient every other check let through.
    const lmtp = this.#s.lmtpProbe;
    if (verdict.kind !== 'accept' || lmtp === null || !lmtp.probe.covers(rcpt.domain)) return verdict;
    return this.#verifyOverLmtp(lmtp, rcpt);
  }

  /** An LMTP domain's recipient: accepted only if its LMTP server takes the address. */
  async #verifyOverLmtp(
    lmtp: NonNullable<SharedServices['lmtpProbe']>,
    rcpt: Mailbox,
  ): Promise<RecipientVerdict> {
    const address = formatMailbox(rcpt);
    const answer = await lmtp.probe.verify(addressKey(rcpt), rcpt.domain);
    switch (answer.kind) {
      case 'exists':
        return { kind: 'accept' };
      case 'unknown':
        this.#log.info(
          { rcpt: address, reply: `${answer.reply.code} ${answer.reply.lines.join(' ')}` },
          'recipient refused: the LMTP server does not know it',
        );
        return { kind: 'reject', reply: reply('NO_SUCH_USER', { address }) };
      case 'unavailable':
        this.#log.warn(
          { rcpt: address, reason: answer.reason, action: lmtp.unavailable },
          'recipient not verified: the LMTP server could not be asked',
        );
        return lmtp.unavailable === 'accept'
          ? { kind: 'accept' }
          : { kind: 'reject', reply: reply('RECIPIENT_UNVERIFIED', { address }) };
      default: {
        const unexpected: never = answer;
        throw new Error(`unexpected probe answer ${JSON.stringify(unexpected)}`);
      }
    }
  }

  verifyAddress(rcpt: Mailbox): Promise<boolean> {
    return Promise.resolve(this.#s.router.route(addressKey(rcpt)).kind === 'local');
  }

  async isAuthLockedOut(ip: string): Promise<boolean> {
    // The store unreachable: not refused here; authenticate() fails with 454 when it is asked.
    return this.#s.throttle.isLockedOut(ip).catch(() => false);
  }

  async authenticate(creds: Credentials, ctx: AuthContext): Promise<AuthOutcome> {
    const { throttle, auth } = this.#s;
    const { ip } = ctx;
    // Counted by the name the client claims (existing or not), so a guesser cannot dodge it.
    const claimed = claimedUser(creds);
    if (await throttle.isLockedOut(ip, claimed)) return { kind: 'locked' };
    let result: VerifyResult;
    let reason: string | undefined;
    if (creds.kind === 'oauth') {
      // A TemporaryAuthError (key set unreachable) goes up to the session: 454, not counted.
      const token = auth.oauth === undefined ? null : await auth.oauth.verify(creds.token, creds.authzid);
      if (token?.ok === true && !auth.oauthUserAllowed(token.user)) reason = 'unknown-user';
      else if (token?.ok === false) reason = token.reason;
      result = token?.ok === true && reason === undefined ? { ok: true, user: token.user } : { ok: false };
    } else {
      result = await auth.passwords.verify(creds, ctx);
    }
    if (result.ok) {
      await throttle.recordSuccess(ip, claimed);
      return { kind: 'ok', user: result.user };
    }
    const delayMs = await throttle.delayAfterFailure(ip, claimed);
    if (creds.kind === 'oauth' && auth.oauth !== undefined) {
      const challenge = auth.oauth.errorChallenge(creds.mechanism);
      return { kind: 'fail', delayMs, challenge, ...(reason !== undefined ? { reason } : {}) };
    }
    return { kind: 'fail', delayMs };
  }

  mayUseSender(user: string, sender: string): boolean {
    const { users, auth } = this.#s;
    return mayUseSender(
      {
        fromUsersFile: (u, s) => (users.has(u) ? users.mayUseSender(u, s) : undefined),
        localDomains: auth.localDomains,
      },
      user,
      sender,
    );
  }

  beginMessage(): MessageSink {
    return this.#s.spool.begin();
  }

  beginCheck(ctx: CheckContext): MessageCheck | null {
    return this.#s.mailauth.begin(ctx, this.#log);
  }

  signMessage(sink: MessageSink, ctx: CheckContext): MessageSink {
    // Authenticated mail is signed; a trusted network's mail by [dkim] sign_trusted_networks.
    let origin: SigningOrigin | null = null;
    if (ctx.authUser !== undefined) origin = 'authenticated';
    else if (ctx.listener === 'smtp' && this.#s.policy.trusted.has(ctx.client.ip)) origin = 'trusted-network';
    return this.#s.dkim.wrap(sink, origin, this.#log);
  }

  filterMessage(ctx: FilterContext, sink: MessageSink): Promise<FilterOutcome> | null {
    return this.#s.filters.run(ctx, sink, this.#log);
  }

  spoolFailureReply(err: unknown): Reply {
    this.#log.error({ err }, 'spool write failed; message not queued');
    return err instanceof SpoolError && err.code === 'ENOSPC' ? reply('SPOOL_FULL') : reply('SPOOL_ERROR');
  }

  event(name: string, fields: Record<string, unknown>): void {
    if (DEBUG_EVENTS.has(name)) this.#log.debug(fields, name);
    else this.#log.info(fields, name);
    this.#s.events.session(name, fields, () => ({ listener: this.#listener, ip: this.#ip }));
  }
}
