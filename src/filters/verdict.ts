/**
 * The one verdict type every content filter client returns (rspamd.ts, spamd.ts, milter.ts), and
 * how the verdicts of several filters combine into the message's. Plain data: the words of the
 * reply are rendered from it by the pipeline (pipeline.ts) through the reply table.
 * Trust level: a verdict's texts and header values come from the filter, a trusted local daemon,
 * but they end up in SMTP replies and in stored header fields, so they are cleaned here
 * (safeReplyText, safeFieldValue) before use.
 */

/** What the filter decided for the message. */
export type FilterAction =
  | { kind: 'accept' }
  /** 550 5.7.1 with the filter's text. */
  | { kind: 'reject'; text: string }
  /** 451 4.7.1 with the filter's text (soft reject, greylist, milter tempfail). */
  | { kind: 'tempfail'; text: string }
  /** A milter's own SMTP reply (SMFIR_REPLYCODE), already validated: 4xx or 5xx, matching class. */
  | { kind: 'reply'; code: number; enhanced: string; text: string }
  /** Accept and drop (logged). */
  | { kind: 'discard' }
  /** Accept and deliver local copies to the Junk folder. */
  | { kind: 'junk' };

/**
 * A change to the stored message. Fields are counted in the stored header section, our own
 * Received field included (a milter sees it too, as in Postfix).
 */
export type MessageEdit =
  /** A new field at the top of the header section (cheap: stored as the commit's prefix). */
  | { op: 'prepend'; name: string; value: string }
  /** A new field at the end of the header section (SMFIR_ADDHEADER). */
  | { op: 'append'; name: string; value: string }
  /** A new field before the index-th field, 0-based (SMFIR_INSHEADER). */
  | { op: 'insert'; index: number; name: string; value: string }
  /**
   * The index-th (1-based) field named `name` gets a new value (SMFIR_CHGHEADER); null deletes
   * it. Index 0 means every field of that name (rspamd's remove_headers with 0).
   */
  | { op: 'change'; name: string; index: number; value: string | null }
  /** The body (everything after the header section) is replaced (SMFIR_REPLBODY). */
  | { op: 'body'; body: Buffer };

export interface FilterVerdict {
  action: FilterAction;
  edits: MessageEdit[];
  /** Envelope changes (milter SMFIR_ADDRCPT / SMFIR_DELRCPT). */
  addRecipients: string[];
  removeRecipients: string[];
  /** For the log: what the filter said, short (e.g. "action=reject score=15.2/15"). */
  detail: string;
  /** The filter failed (down, timed out, spoke nonsense) and this is its failure mode. */
  failed?: boolean;
}

export function verdict(action: FilterAction, detail: string, edits: MessageEdit[] = []): FilterVerdict {
  return { action, edits, addRecipients: [], removeRecipients: [], detail };
}

/** How strong an action is when several filters answered: the strongest one wins. */
function rank(a: FilterAction): number {
  switch (a.kind) {
    case 'accept':
      return 0;
    case 'junk':
      return 1;
    case 'discard':
      return 2;
    case 'tempfail':
      return 3;
    case 'reply':
      return a.code >= 500 ? 5 : 3;
    case 'reject':
      return 5;
    default: {
      const never: never = a;
      throw new Error(`unhandled filter action ${JSON.stringify(never)}`);
    }
  }
}

/**
 * The message's verdict from its filters' verdicts, in configuration order: the strongest action
 * (a refusal over a deferral over a discard over Junk), the first filter's at equal strength; the
 * edits and recipient changes of every filter, in order (they matter only when the message is
 * kept).
 */
export function combine(verdicts: readonly FilterVerdict[]): FilterVerdict {
  let action: FilterAction = { kind: 'accept' };
  const out: FilterVerdict = verdict(action, '');
  for (const v of verdicts) {
    if (rank(v.action) > rank(action)) action = v.action;
    out.edits.push(...v.edits);
    out.addRecipients.push(...v.addRecipients);
    out.removeRecipients.push(...v.removeRecipients);
  }
  out.action = action;
  return out;
}

/** Longest filter text kept in a reply. */
const MAX_REPLY_TEXT = 200;

/**
 * A filter's text made safe for one SMTP reply line (RFC 5321 4.2: printable text, no CR or LF):
 * control characters and non-ASCII become spaces, runs of white space one space, the length is
 * bounded. An empty result becomes `fallback`.
 */
export function safeReplyText(text: string, fallback: string): string {
  const cleaned = text
    .replace(/[^\x20-\x7e]/g, ' ')
    .replace(/\s+/g, ' ')
    .trim()
    .slice(0, MAX_REPLY_TEXT)
    .trim();
  return cleaned === '' ? fallback : cleaned;
}

/** RFC 5322 3.6.8: a field name is printable US-ASCII except ":" (and not empty). */
export function isFieldName(name: string): boolean {
  return /^[\x21-\x39\x3b-\x7e]{1,200}$/.test(name);
}

/**
 * A header field value from a filter, safe to store: line breaks become CRLF followed by a tab
 * only where the filter folded (a break followed by white space); any other CR, LF or NUL
 * becomes a space, so no value can end the header section or start a new field.
 */
export function safeFieldValue(value: string): string {
  const lines = value.split(/\r?\n/).map((l) => l.replace(/[\r\0]/g, ' '));
  let out = lines[0] ?? '';
  for (const line of lines.slice(1)) out += /^[ \t]/.test(line) ? `\r\n${line}` : ` ${line}`;
  return out;
}
