/**
 * The reply table holds only replies Sterna can send: every id in REPLIES must be referenced
 * by some source file of src/ other than the table itself (and its doc renderer). Reads the
 * TypeScript sources, not the build, and looks for the id as a whole word outside comments, so
 * it does not matter how the id is passed (reply('ID'), a variable typed ReplyId, a ternary).
 */
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { REPLIES } from './replies.js';

/** This file runs from dist/src/smtp/; the sources are in src/ at the top of the repository. */
const SRC = fileURLToPath(new URL('../../../src/', import.meta.url));

/** Files that define or print the table rather than use it. */
const NOT_USES = new Set(['smtp/replies.ts', 'smtp/replies-doc.ts']);

async function sourceFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await sourceFiles(full)));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts')) out.push(full);
  }
  return out;
}

/** The source without comments (block and line; a "//" inside a string such as a URL is kept). */
function withoutComments(source: string): string {
  return source.replace(/\/\*[\s\S]*?\*\//g, ' ').replace(/(^|[^:'"`\\])\/\/.*$/gm, '$1');
}

test('every reply in the table is used somewhere in src/ (unused replies are removed, not documented)', async () => {
  const files = await sourceFiles(SRC);
  const sources: string[] = [];
  for (const file of files) {
    if (NOT_USES.has(path.relative(SRC, file).split(path.sep).join('/'))) continue;
    sources.push(withoutComments(await readFile(file, 'utf8')));
  }
  assert.ok(sources.length > 20, `found only ${sources.length} source files under ${SRC}`);
  const all = sources.join('\n');
  const unused = Object.keys(REPLIES).filter((id) => !new RegExp(`\\b${id}\\b`).test(all));
  assert.deepEqual(unused, [], `replies defined but never sent: ${unused.join(', ')}`);
});

test('the check sees an id however it is written, and not in a comment', () => {
  const uses = (src: string, id: string): boolean => new RegExp(`\\b${id}\\b`).test(withoutComments(src));
  assert.equal(uses("reply('QUEUED', { qid })", 'QUEUED'), true);
  assert.equal(uses('const id: ReplyId = ok ? "SPOOL_FULL" : "SPOOL_ERROR";', 'SPOOL_ERROR'), true);
  assert.equal(uses('REPLIES.HELP.code', 'HELP'), true);
  assert.equal(uses('// we could send TOO_MANY_HOPS here', 'TOO_MANY_HOPS'), false);
  assert.equal(uses('/* EARLY_TALKER one day */ x()', 'EARLY_TALKER'), false);
  assert.equal(uses("fetch('http://x/') // QUEUED", 'QUEUED'), false);
  assert.equal(uses("reply('TOO_MANY_ERRORS_X')", 'TOO_MANY_ERRORS'), false);
});
