/**
 * Addresses as users and scripts give them to `sterna sendmail`: on the command line
 * ("alice", "bob@example.org, carol@example.org", "Dan <dan@example.org>") and in the To, Cc and
 * Bcc header fields that -t reads (RFC 5322 3.4 address-list: display names, angle addresses,
 * quoted strings, comments, groups). Returns the addr-specs only; checking them is the
 * caller's (smtp/address.ts). Pure. Trust: parses untrusted text; bounded by its input.
 */

/** The addr-specs in an RFC 5322 address list (or a comma-separated command-line argument). */
export function addressList(text: string): string[] {
  const out: string[] = [];
  let plain = '';
  let angle: string | null = null;
  const finish = (): void => {
    const a = (angle ?? plain).trim();
    if (a !== '') out.push(a);
    plain = '';
    angle = null;
  };
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === '"') {
      // A quoted string: part of a local part or of a display name.
      let j = i + 1;
      let q = '"';
      while (j < text.length && text[j] !== '"') {
        if (text[j] === '\\' && j + 1 < text.length) q += text[j++]!;
        q += text[j++]!;
      }
      plain += `${q}"`;
      i = j;
    } else if (c === '(') {
      // A comment, possibly nested (RFC 5322 3.2.2): dropped.
      let depth = 1;
      let j = i + 1;
      for (; j < text.length && depth > 0; j++) {
        if (text[j] === '\\') j++;
        else if (text[j] === '(') depth++;
        else if (text[j] === ')') depth--;
      }
      i = j - 1;
    } else if (c === '<') {
      const close = text.indexOf('>', i + 1);
      const end = close === -1 ? text.length : close;
      // "<@a,@b:user@host>": an obsolete route is dropped (RFC 5322 4.4).
      angle = text.slice(i + 1, end).replace(/^(@[^:]*:)/, '');
      i = end;
    } else if (c === ':' && angle === null) {
      // "group: a, b;": the group's name is not an address.
      plain = '';
    } else if (c === ',' || c === ';') {
      finish();
    } else if (angle === null) {
      plain += c;
    }
  }
  finish();
  return out;
}

/** Adds @origin to a bare local name, as Postfix appends myorigin. */
export function qualify(address: string, origin: string): string {
  return address.includes('@') ? address : `${address}@${origin}`;
}
