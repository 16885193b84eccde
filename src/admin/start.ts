/**
 * Starts the admin listener with all its routes: health and metrics (routes-health.ts), the
 * queue (api-queue.ts), users (api-users.ts), recent events and message stories
 * (api-recent.ts). server/app.ts calls this once the rest of the server runs.
 * Trust: see listener.ts.
 */
import type { TlsContextProvider } from '../server/tls.js';
import { queueRoutes } from './api-queue.js';
import { recentRoutes } from './api-recent.js';
import { destinationRoutes } from './api-destinations.js';
import { sampleQueueSize, statsRoutes } from './api-stats.js';
import { dashboardRoutes } from './dashboard.js';
import { userRoutes } from './api-users.js';
import { startAdminListener, type AdminListener } from './listener.js';
import { healthRoutes, queueSnapshot } from './routes-health.js';
import type { AdminServices } from './services.js';

export async function startAdmin(s: AdminServices & { tls: TlsContextProvider }): Promise<AdminListener> {
  s.events.metrics.setQueueSource(() => queueSnapshot(s, Date.now()));
  s.events.metrics.setCertificateSource(() => s.tls.expiresAt());
  // Every process samples its queue size into its series: with workers, the primary sums them.
  const stopSampling = sampleQueueSize(s);
  const listener = await startAdminListener({
    config: s.config,
    log: s.log,
    tls: s.tls,
    lifecycle: s.lifecycle,
    routes: (app) => {
      healthRoutes(app, s);
      queueRoutes(app, s);
      userRoutes(app, s);
      recentRoutes(app, s);
      statsRoutes(app, s);
      destinationRoutes(app, s);
      dashboardRoutes(app);
    },
  }).catch((err: unknown) => {
    stopSampling();
    throw err;
  });
  return {
    addresses: listener.addresses,
    close: async () => {
      stopSampling();
      await listener.close();
    },
  };
}
