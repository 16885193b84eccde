/**
 * Types for the one mailauth module Sterna imports by path (mailauth 4.13 has no "exports"
 * map, so the path is reachable): the SPF macro expander (RFC 7208 7), used for exp= (spf.ts).
 */
declare module 'mailauth/lib/spf/macro.js' {
  /** Expands the macros of `input`; throws (with spfResult) on a syntax error. */
  function macro(input: string, values: { sender: string; ip: string; helo: string; mta: string }): string;
  export default macro;
}
