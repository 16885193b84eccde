/**
 * The envelope of a message: who sent it, to whom, from where, with which ESMTP parameters.
 * Plain data, serialisable as JSON, shared by the session (which builds it), the spool
 * (which stores it beside the body) and delivery (which reads it back).
 */
import type { Outcome } from './outcome.js';

/** Which listener accepted the message. */
export type ListenerKind = 'smtp' | 'submission' | 'submissions';

/** RFC 1652 / 3030 / 6152 BODY= values. */
export type BodyType = '7BIT' | '8BITMIME' | 'BINARYMIME';

/** RFC 3461 NOTIFY= values. NEVER excludes the others. */
export type NotifyValue = 'NEVER' | 'SUCCESS' | 'FAILURE' | 'DELAY';

/** Parameters of MAIL FROM (RFC 1870 SIZE, 6152 BODY, 6531 SMTPUTF8, 3461 RET/ENVID). */
export interface MailParams {
  size?: number;
  body?: BodyType;
  smtputf8?: boolean;
  ret?: 'FULL' | 'HDRS';
  /** ENVID, decoded from xtext. */
  envid?: string;
}

/** Parameters of RCPT TO (RFC 3461 NOTIFY and ORCPT). */
export interface RcptParams {
  notify?: NotifyValue[];
  /** ORCPT: address type (normally "rfc822") and the original address, decoded from xtext. */
  orcpt?: { type: string; address: string };
}

export interface Recipient {
  /** The forward-path as accepted, local part as sent, domain lower-cased. */
  address: string;
  params: RcptParams;
}

export interface ClientInfo {
  ip: string;
  port: number;
  /** The name the client gave in HELO/EHLO. */
  helo: string;
  /** Reverse DNS name, when known. */
  hostname?: string;
}

export interface TlsInfo {
  version: string;
  cipher: string;
}

export interface Envelope {
  /** Reverse-path; the empty string is the null sender <>. */
  sender: string;
  mailParams: MailParams;
  recipients: Recipient[];
  client: ClientInfo;
  /**
   * 'sendmail': picked up from the maildrop (`sterna sendmail`, queue/maildrop-pickup.ts);
   * 'http': posted to the HTTP submission API (api/, docs/http-api.md), authUser set.
   */
  listener: ListenerKind | 'sendmail' | 'http';
  /** For listener 'sendmail': the local Unix user who submitted it, as the kernel recorded it. */
  localUser?: { login: string; uid: number };
  /** The authenticated identity, when the session authenticated. */
  authUser?: string;
  tls?: TlsInfo;
  /**
   * Sterna signed the message with DKIM when it was queued (src/mailauth/dkim-sign.ts): its
   * octets must reach the next hop unchanged, so it is never converted to 7 bit.
   */
  dkimSigned?: true;
  /**
   * A content filter judged the message spam (src/filters/): local delivery puts it in the
   * mailbox's Junk folder (Maildir++ ".Junk") instead of its inbox.
   */
  junk?: boolean;
  /** Arrival time, milliseconds since the epoch. */
  receivedAt: number;
}

/**
 * Where a recipient stands. Kept on disk by the spool, one per recipient. A deferred or failed
 * recipient keeps the outcome that put it there (message/outcome.ts), as data.
 */
export type RecipientState =
  | { status: 'pending' }
  | { status: 'delivered'; at: number; detail?: string }
  | {
      status: 'deferred';
      attempts: number;
      nextAttemptAt: number;
      /** Why the last attempt did not deliver. */
      outcome: Outcome;
      /** The sender has been sent the delay warning for this recipient (once, RFC 3461 "delayed"). */
      warned?: true;
    }
  | { status: 'failed'; at: number; outcome: Outcome };
