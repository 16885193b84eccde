/**
 * Bundles the dashboard (web/: preact and uplot, TypeScript and JSX) into dist/web/ with
 * esbuild's JS API: app.js, app.css and index.html, the files admin/dashboard.ts serves. Run by
 * `npm run build` after tsc (which has type-checked web/ with web/tsconfig.json); no network,
 * nothing fetched at run time.
 * Trust: build tool; reads the repository only.
 */
import { copyFile, mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

/** The repository (this file runs as dist/src/admin/dashboard-build.js). */
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));

export async function buildDashboard(root: string = ROOT): Promise<void> {
  const out = `${root}dist/web`;
  await mkdir(out, { recursive: true });
  await build({
    absWorkingDir: root,
    entryPoints: { app: 'web/src/main.tsx' },
    bundle: true,
    outdir: out,
    format: 'esm',
    platform: 'browser',
    target: ['es2020'],
    jsx: 'automatic',
    jsxImportSource: 'preact',
    minify: true,
    legalComments: 'none',
    logLevel: 'warning',
  });
  await copyFile(`${root}web/index.html`, `${out}/index.html`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await buildDashboard();
