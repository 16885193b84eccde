/**
 * EHLO keywords offered, by listener and session state (RFC 5321 4.1.1.1 and the extension RFCs).
 * STARTTLS only before TLS (RFC 3207); AUTH only where allowed (RFC 4954 and our policy:
 * never before TLS unless configured).
 */

export interface ExtensionState {
  maxMessageBytes: number;
  tlsActive: boolean;
  tlsAvailable: boolean;
  /** SASL mechanisms to offer now, or an empty list to omit AUTH. */
  authMechanisms: readonly string[];
}

export function ehloKeywords(s: ExtensionState): string[] {
  const keys = [
    'PIPELINING', // RFC 2920
    `SIZE ${s.maxMessageBytes}`, // RFC 1870
    '8BITMIME', // RFC 6152
    'SMTPUTF8', // RFC 6531
    'ENHANCEDSTATUSCODES', // RFC 2034
    'CHUNKING', // RFC 3030
    'DSN', // RFC 3461
  ];
  if (s.tlsAvailable && !s.tlsActive) keys.push('STARTTLS');
  if (s.authMechanisms.length > 0) keys.push(`AUTH ${s.authMechanisms.join(' ')}`);
  return keys;
}
