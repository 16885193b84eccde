/**
 * What a delivery status means, in plain words, for the human-readable part of a DSN (RFC 3464
 * 2.1 and RFC 3461 6.3 leave its wording to the reporting MTA): by the outcome's reason id for
 * what Sterna decided itself (explainOutcome), by the RFC 3463 status (and its registry, RFC
 * 5248) for a remote server's reply (explainStatus). Pure data and lookups, no I/O.
 *
 * Trust: a remote server's reply text is untrusted. It is only matched, as a heuristic, to
 * refine a vague status ("550 5.7.1 ... listed as spam"); it never chooses the explanation of
 * one of Sterna's own outcomes, and it is never echoed from here.
 */
import type { LocalReason, Outcome } from '../message/outcome.js';
import { outcomeStatus } from '../message/outcome.js';

const STATUS_RE = /^([245])\.(\d{1,3})\.(\d{1,3})$/;

export interface StatusExplanation {
  /** What the status most likely means, in plain words. */
  meaning: string;
  /** What the sender can do about it. */
  advice: string;
}

const MAILBOX_UNKNOWN: StatusExplanation = {
  meaning: "The recipient's mailbox does not exist at the receiving server.",
  advice:
    'Check the address for typing mistakes. If it is right, the person may have left or changed ' +
    'address: reach them another way and ask for their current address.',
};
const MAILBOX_FULL: StatusExplanation = {
  meaning: "The recipient's mailbox is full.",
  advice: 'Try again later, or let the recipient know another way that their mailbox is full.',
};
const TOO_BIG: StatusExplanation = {
  meaning: "The message is larger than the recipient's server accepts.",
  advice:
    'Send a smaller message: share large attachments through a link, or spread them over several messages.',
};
const TLS_REQUIRED: StatusExplanation = {
  meaning:
    'The receiving server requires an encrypted (TLS) connection, and one could not be set up with it.',
  advice:
    "Forward this report to your mail administrator: the sending server's TLS set-up, or the " +
    "receiving server's certificate, needs fixing.",
};
const SPAM: StatusExplanation = {
  meaning:
    'The receiving server took the message for spam, or refused mail from the sending server ' +
    'because of its reputation or a blocklist.',
  advice:
    'Ask the recipient another way whether they can receive mail from you. If the reply names a ' +
    "blocklist, forward this report to your mail administrator to check the sending server's listing.",
};
const POLICY: StatusExplanation = {
  meaning: 'The receiving server refused the message for a security or policy reason.',
  advice:
    "Read the server's reply above for the reason. If it is unclear, ask the recipient another way " +
    'whether they can receive mail from you, or forward this report to your mail administrator.',
};
const AUTH_CHECKS: StatusExplanation = {
  meaning:
    'The receiving server refused the message because it failed the checks that prove it comes from your domain (SPF, DKIM, DMARC).',
  advice:
    "Forward this report to your mail administrator: the domain's SPF, DKIM or DMARC records need checking.",
};

/** Codes whose meaning depends on the class. */
const BY_CODE: Readonly<Record<string, StatusExplanation>> = {
  '4.7.1': {
    meaning:
      'The receiving server asked to try again later. This is often greylisting (a spam defence ' +
      'that delays mail from senders it has not seen before) or a rate limit.',
    advice:
      "Usually nothing: a later attempt normally gets through. If none does, the recipient's mail " +
      'administrator can tell you why their server turns the message away.',
  },
  '5.7.1': {
    meaning:
      'The receiving server refused the message by policy: the sender, the sending server or the ' +
      'content is not accepted there. Many servers refuse mail they take for spam this way.',
    advice: POLICY.advice,
  },
};

/** subject.detail, for either class. */
const BY_DETAIL: Readonly<Record<string, StatusExplanation>> = {
  '1.1': MAILBOX_UNKNOWN,
  '1.2': {
    meaning: "The recipient's domain (the part after the @) does not exist, or has no mail server.",
    advice: 'Check the part after the @ for typing mistakes.',
  },
  '1.3': {
    meaning: 'The recipient address is not a valid address.',
    advice: 'Check the address: it should look like name@example.com, with no spaces or extra characters.',
  },
  '1.6': {
    meaning: 'The recipient has moved: this mailbox no longer exists.',
    advice: 'Ask the recipient for their new address.',
  },
  '1.10': {
    meaning: "The recipient's domain announces that it accepts no mail at all (a null MX record, RFC 7505).",
    advice: 'Nobody can receive mail at this domain. Check the address, or reach the person another way.',
  },
  '2.1': {
    meaning: "The recipient's mailbox is disabled and does not accept messages.",
    advice: 'Reach the recipient another way.',
  },
  '2.2': MAILBOX_FULL,
  '2.3': TOO_BIG,
  '3.1': {
    meaning: 'The receiving mail system has run out of storage.',
    advice: 'This is usually temporary: try again later.',
  },
  '3.4': TOO_BIG,
  '4.1': {
    meaning: "The recipient's mail server did not answer.",
    advice:
      "This is usually temporary. If it lasts, the recipient's mail server may be down for good: " +
      'reach them another way.',
  },
  '4.2': {
    meaning: "The connection to the recipient's mail server failed or was cut off.",
    advice: 'This is usually temporary: try again later.',
  },
  '4.3': {
    meaning: "Looking up the recipient's domain in the DNS failed.",
    advice: 'This is usually temporary. Check the part after the @ for typing mistakes.',
  },
  '4.4': {
    meaning: "No way to reach the recipient's mail server could be found.",
    advice:
      "Check the part after the @ for typing mistakes. If it is right, the recipient's domain has a " +
      'mail set-up problem: let them know another way.',
  },
  '4.6': {
    meaning: 'The message went round in a loop between mail servers.',
    advice: 'Forward this report to your mail administrator: a forwarding set-up needs fixing.',
  },
  '4.7': {
    meaning: 'The message waited too long in the queue without being delivered.',
    advice: 'Try again later, or reach the recipient another way.',
  },
  '6.7': {
    meaning: "The recipient's server does not accept international (non-ASCII) addresses.",
    advice: 'Use an all-ASCII address for this recipient, if they have one.',
  },
  '7.10': TLS_REQUIRED,
  '7.23': AUTH_CHECKS,
  '7.25': {
    meaning:
      "The receiving server refused the message because the sending server's address has no matching reverse DNS name.",
    advice:
      'Forward this report to your mail administrator: the sending server needs a reverse DNS (PTR) record.',
  },
  '7.26': AUTH_CHECKS,
  '7.27': {
    meaning:
      'Your domain announces that it accepts no mail (null MX), so the receiving server refuses mail from it.',
    advice: 'Send from an address that can receive replies.',
  },
};

/** By subject alone. */
const BY_SUBJECT: Readonly<Record<string, StatusExplanation>> = {
  '0': {
    meaning: 'The receiving server gave no detail about the problem.',
    advice:
      "Read the server's reply above. If it is unclear, forward this report to your mail administrator.",
  },
  '1': {
    meaning: 'There is a problem with the recipient address.',
    advice: 'Check the address for typing mistakes.',
  },
  '2': {
    meaning: "There is a problem with the recipient's mailbox.",
    advice: 'Try again later, or reach the recipient another way.',
  },
  '3': {
    meaning: 'The receiving mail system has a problem.',
    advice: 'This is often temporary: try again later.',
  },
  '4': {
    meaning: "There was a network or routing problem on the way to the recipient's mail server.",
    advice: 'This is often temporary: try again later.',
  },
  '5': {
    meaning: 'The mail servers could not understand each other (a protocol error).',
    advice: 'Forward this report to your mail administrator.',
  },
  '6': {
    meaning: "The receiving server refused the message's content or format.",
    advice: 'Try sending it plainer: with fewer or different attachments.',
  },
  '7': POLICY,
};

const BY_CLASS: Readonly<Record<string, StatusExplanation>> = {
  '2': { meaning: 'The message was delivered.', advice: 'Nothing to do.' },
  '4': {
    meaning: 'A temporary problem prevented delivery.',
    advice:
      "Read the server's reply above. If it is unclear, forward this report to your mail administrator.",
  },
  '5': {
    meaning: 'A permanent problem prevented delivery.',
    advice:
      "Read the server's reply above. If it is unclear, forward this report to your mail administrator.",
  },
};

const UNKNOWN_STATUS: StatusExplanation = {
  meaning: 'The mail system reported a status it does not recognise.',
  advice: 'Forward this report to your mail administrator.',
};

/**
 * Refinements from the remote server's words, applied when its status code is vaguer than
 * its text: `subjects` lists the status subjects a refinement may override; `anyDetail`
 * allows it over a specific detail too (5.7.1 is the classic spam refusal), otherwise only
 * over a detail of 0.
 */
const REFINEMENTS: readonly {
  re: RegExp;
  subjects: readonly string[];
  anyDetail: boolean;
  explanation: StatusExplanation;
}[] = [
  {
    re: /\b(spam|spamhaus|junk|block ?list(ed)?|black ?list(ed)?|rbl|dnsbl|reputation)\b/i,
    subjects: ['0', '6', '7'],
    anyDetail: true,
    explanation: SPAM,
  },
  {
    re: /\b(tls|starttls|ssl|encrypt\w*)\b/i,
    subjects: ['0', '7'],
    anyDetail: false,
    explanation: TLS_REQUIRED,
  },
  {
    re: /(user unknown|unknown (user|recipient|mailbox)|no such (user|mailbox|recipient)|(mailbox|user|recipient|address) (does not exist|doesn't exist|not found|unknown)|invalid (recipient|mailbox))/i,
    subjects: ['0', '1'],
    anyDetail: false,
    explanation: MAILBOX_UNKNOWN,
  },
  {
    re: /(mailbox (is )?full|over ?quota|quota exceeded|exceeds? (its |the )?quota|insufficient (storage|space))/i,
    subjects: ['0', '2'],
    anyDetail: false,
    explanation: MAILBOX_FULL,
  },
  {
    re: /(too (big|large)|size limit|exceeds? (the )?(maximum|size))/i,
    subjects: ['0', '2', '3'],
    anyDetail: false,
    explanation: TOO_BIG,
  },
];

/**
 * What an RFC 3463 status most likely means and what the sender can do. Looked up by the
 * whole code (class.subject.detail), then subject.detail, then subject, then class; the remote
 * server's text (`diagnostic`) may refine a vague code, e.g. "550 5.7.1 ... listed as spam".
 */
export function explainStatus(status: string, diagnostic?: string): StatusExplanation {
  const m = STATUS_RE.exec(status);
  if (m === null) return UNKNOWN_STATUS;
  const [, klass = '', subject = '', detail = ''] = m;
  if (klass === '2') return BY_CLASS['2']!;
  if (diagnostic !== undefined) {
    for (const r of REFINEMENTS) {
      if (!r.subjects.includes(subject) || !(r.anyDetail || detail === '0')) continue;
      if (r.re.test(diagnostic)) return r.explanation;
    }
  }
  return (
    BY_CODE[status] ??
    BY_DETAIL[`${subject}.${detail}`] ??
    BY_SUBJECT[subject] ??
    BY_CLASS[klass] ??
    UNKNOWN_STATUS
  );
}

/** Explanations of Sterna's own outcomes that say more than their status code; others fall back to it. */
const BY_REASON: Readonly<Partial<Record<LocalReason, StatusExplanation>>> = {
  'null-mx': {
    meaning: "The recipient's domain announces that it accepts no mail at all (a null MX record, RFC 7505).",
    advice: 'Nobody can receive mail at this domain. Check the address, or reach the person another way.',
  },
  nxdomain: {
    meaning: "The recipient's domain (the part after the @) does not exist.",
    advice: 'Check the part after the @ for typing mistakes.',
  },
  loop: {
    meaning: "The recipient's domain sends its mail back to the server that sent this report (a loop).",
    advice: "Forward this report to your mail administrator: the domain's mail set-up needs fixing.",
  },
  'lost-after-end-of-data': {
    meaning:
      'The receiving server read the whole message but its answer never came; it may have taken the message, so it is tried again later rather than sent elsewhere.',
    advice: 'Nothing yet. The recipient may receive the message twice.',
  },
  'tls-certificate-unverified': TLS_REQUIRED,
  'tls-not-offered': TLS_REQUIRED,
  'tls-failed': TLS_REQUIRED,
  'smtputf8-not-offered': {
    meaning:
      "The recipient's server does not accept international (non-ASCII) addresses, which this message needs.",
    advice: 'Use an all-ASCII address for this recipient, if they have one.',
  },
  '8bitmime-not-offered': {
    meaning:
      "The recipient's server accepts only 7-bit mail. This message has 8-bit text and carries a DKIM signature, which converting it would break, so it was not sent.",
    advice:
      'Send it again with its text encoded for 7-bit transport (quoted-printable or base64; most mail programs do this for non-ASCII text when set to MIME-encode, or for attachments).',
  },
  'size-exceeded': TOO_BIG,
  'admin-bounce': {
    meaning: 'The mail administrator of the sending system returned the message without delivering it.',
    advice: 'Ask your mail administrator why, if you do not know.',
  },
  expired: {
    meaning: 'The message waited too long in the queue without being delivered.',
    advice: 'Try again later, or reach the recipient another way.',
  },
};

/**
 * What an outcome most likely means and what the sender can do: Sterna's own outcomes by their
 * reason id, then by their status; a remote reply by its status, refined by its words; an expiry
 * by its own reason (the last answer it wraps is quoted beside it in the report).
 */
export function explainOutcome(o: Outcome): StatusExplanation {
  if (o.reason !== 'remote-reply' && o.reason !== 'legacy') {
    const own = BY_REASON[o.reason];
    if (own !== undefined) return own;
    return explainStatus(outcomeStatus(o));
  }
  return explainStatus(outcomeStatus(o), o.text);
}
