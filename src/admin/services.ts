/**
 * What the admin routes work with: the running server's parts, handed over by server/app.ts.
 * Trust: internal.
 */
import type { UserStore } from '../auth/users.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../observability/log.js';
import type { MailEvents } from '../observability/mail-events.js';
import type { QueueManager } from '../queue/manager.js';
import type { Spool } from '../queue/spool.js';
import type { QueueOps } from '../cluster/queue-merge.js';
import type { AdminData, SpoolQueue } from './admin-data.js';
import type { Lifecycle, ReadyState } from './health.js';

export interface AdminServices {
  config: Config;
  log: Logger;
  lifecycle: Lifecycle;
  events: MailEvents;
  manager: QueueManager;
  spool: Spool;
  users: UserStore;
  /** Every spool of this process with its queue manager: its own first, then those it drains. */
  queues: readonly SpoolQueue[];
  /** The dashboard's data (admin-data.ts): every worker's, merged, with workers; else this process's. */
  adminData: AdminData;
  /** /readyz: every worker's readiness, with workers (cluster/readiness.ts); else this process's. */
  readiness: () => Promise<ReadyState>;
  /** Queue operations on every spool (every worker's, with workers; cluster/queue-merge.ts). */
  queueOps: QueueOps;
  /** /metrics for every worker, aggregated (cluster/primary.ts); absent: this process's. */
  metricsText?: () => Promise<string>;
}
