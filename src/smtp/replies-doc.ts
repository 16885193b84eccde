/**
 * Renders docs/replies.md from the reply table, so the documentation of every reply Sterna
 * sends cannot drift from the code (a test compares the two; `npm run docs` rewrites it).
 */
import { REPLIES } from './replies.js';

export function renderRepliesDoc(): string {
  const rows = Object.entries(REPLIES).map(([id, spec]) => {
    const enhanced = 'enhanced' in spec ? spec.enhanced : '';
    const close = 'close' in spec && spec.close ? ' (closes the connection)' : '';
    return `| \`${id}\` | ${spec.code} | ${enhanced} | ${spec.text.replaceAll('|', '\\|')}${close} |`;
  });
  return [
    '# Replies',
    '',
    'Every reply Sterna sends, from the one table in `src/smtp/replies.ts` (generated: `npm run docs`).',
    'Codes follow RFC 5321 4.2-4.3; enhanced codes RFC 3463 (RFC 2034 ENHANCEDSTATUSCODES).',
    '`{name}` is filled in when the reply is sent. The EHLO reply (250 with the keyword list) is',
    'built from data, not text, and is not listed; a SASL challenge (334) is `AUTH_CHALLENGE`.',
    '',
    '| id | code | enhanced | text |',
    '| --- | --- | --- | --- |',
    ...rows,
    '',
  ].join('\n');
}
