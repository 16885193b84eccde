/**
 * The one filter every way in uses to remove incoming Authentication-Results fields that claim
 * Sterna's authserv-id (RFC 8601 5), so that no path (SMTP DATA and BDAT, the sendmail maildrop,
 * the HTTP API) lets a sender forge a pass that our own field would seem to vouch for. Memory is
 * bounded by the filter's hold limit. Trust level: filters untrusted message bytes.
 */
import { FieldFilter } from '../smtp/field-filter.js';
import { AUTH_RESULTS_NAME, claimsAuthservId } from './authserv-id.js';

/** The most header bytes the filter holds while it decides on one field. */
const MAX_HOLD_BYTES = 64 * 1024;

/** A filter that drops every Authentication-Results field claiming `ourId` (or with no readable id). */
export function forgedResultsFilter(ourId: string): FieldFilter {
  return new FieldFilter({
    name: AUTH_RESULTS_NAME,
    drop: (field) => claimsAuthservId(field, ourId),
    maxHold: MAX_HOLD_BYTES,
  });
}
