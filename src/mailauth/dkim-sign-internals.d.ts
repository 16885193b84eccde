/**
 * Types for mailauth's DKIM signer class (mailauth 4.13 has no "exports" map, so the path is
 * reachable). Its dkimSign() is `new DkimSigner(options)`, the message written to it, and the
 * signatures read back; Sterna does the same (dkim-sign.ts) with one change mailauth's options
 * cannot express: the From field oversigned in h=.
 */
declare module 'mailauth/lib/dkim/dkim-signer.js' {
  import { Writable } from 'node:stream';

  interface ParsedHeaderLine {
    /** The field name, lower-cased. */
    key: string;
    /** The field name as written; h= is made of these. */
    casedKey: string;
    line: Buffer;
  }

  interface ParsedHeaders {
    parsed: ParsedHeaderLine[];
    original: Buffer;
  }

  interface SignatureData {
    /** What the constructor sets on the entries it is given; entries added later need it. */
    type: 'DKIM';
    signingDomain: string;
    selector: string;
    /** PEM. */
    privateKey: string;
    algorithm: string;
    canonicalization: string;
  }

  interface SignerOptions {
    /** Field names to sign, colon-separated. */
    headerList: string;
    signatureData: SignatureData[];
    signTime?: Date;
  }

  class DkimSigner extends Writable {
    constructor(options: SignerOptions);
    signatureData: SignatureData[];
    /**
     * The t= of the signatures made at the end. Unset, mailauth 4.13 reads the clock (rounded to
     * the second) once for the signed form of the field and again for the field it emits, so a
     * signature made across a half-second boundary carries another t= than the one it signed.
     */
    signTime?: Date;
    /** The DKIM-Signature fields made at the end, folded, without the final CRLF. */
    signatureHeaders: string[];
    errors: { err: Error; selector?: string; signingDomain?: string }[];
    /** Sets up a body hasher for every signatureData entry not yet hashed. */
    setupHashes(): void;
    /** Called once the header section is parsed, before any body octet is hashed. */
    messageHeaders(headers: ParsedHeaders): Promise<void>;
  }
}
