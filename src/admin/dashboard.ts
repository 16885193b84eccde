/**
 * The web dashboard's files (web/, bundled by dashboard-build.ts into dist/web/): served by the
 * admin listener under /ui/ from a fixed list of file names, so no request path ever reaches
 * the file system. The files hold no data and answer without the token (the page has to load to
 * ask for it); every number the page shows comes from the token-protected /api/ routes.
 * Trust: the request path is only compared with the list.
 */
import { readFile } from 'node:fs/promises';
import type { FastifyInstance } from 'fastify';

/** URL path -> file in dist/web and its content type. */
const FILES: ReadonlyMap<string, { file: string; type: string }> = new Map([
  ['/ui/', { file: 'index.html', type: 'text/html; charset=utf-8' }],
  ['/ui/app.js', { file: 'app.js', type: 'text/javascript; charset=utf-8' }],
  ['/ui/app.css', { file: 'app.css', type: 'text/css; charset=utf-8' }],
]);

/** The dashboard's paths, open without the token (listener.ts). */
export const DASHBOARD_PATHS: readonly string[] = ['/', '/ui', ...FILES.keys()];

/** dist/web, beside dist/src (this file is dist/src/admin/dashboard.js once built). */
const WEB_DIR = new URL('../../web/', import.meta.url);

/** Scripts and styles only from this origin; no inline script, no frames. */
const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

export function dashboardRoutes(app: FastifyInstance): void {
  app.get('/', (_request, reply) => reply.redirect('/ui/'));
  app.get('/ui', (_request, reply) => reply.redirect('/ui/'));
  for (const [urlPath, { file, type }] of FILES) {
    app.get(urlPath, async (_request, reply) => {
      let body: Buffer;
      try {
        body = await readFile(new URL(file, WEB_DIR));
      } catch {
        // The same error body as the API (listener.ts sendError; not imported: it imports this).
        return reply
          .code(404)
          .send({ code: 'not_built', message: 'the dashboard is not built: run npm run build' });
      }
      return reply
        .header('content-type', type)
        .header('cache-control', 'no-cache')
        .header('x-content-type-options', 'nosniff')
        .header('content-security-policy', CSP)
        .send(body);
    });
  }
}
