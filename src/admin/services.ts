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
import type { Lifecycle } from './health.js';

export interface AdminServices {
  config: Config;
  log: Logger;
  lifecycle: Lifecycle;
  events: MailEvents;
  manager: QueueManager;
  spool: Spool;
  users: UserStore;
}
