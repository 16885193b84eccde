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
import type { Lifecycle } from './health.js';

export interface AdminServices {
  config: Config;
  log: Logger;
  lifecycle: Lifecycle;
  events: MailEvents;
  manager: QueueManager;
  spool: Spool;
  users: UserStore;
  /** Queue operations on every spool (every worker's, with workers; cluster/queue-merge.ts). */
  queueOps: QueueOps;
  /** /metrics for every worker, aggregated (cluster/primary.ts); absent: this process's. */
  metricsText?: () => Promise<string>;
}
