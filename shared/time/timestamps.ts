/**
 * Canonical form of the timestamps the alert APIs send.
 *
 * Defender for Endpoint and Microsoft Graph write `lastUpdateTime` with anything from 0 to 7
 * fractional digits and usually, but not always, with a zone designator. Comparing those strings
 * as sent is wrong ("…:00Z" sorts after "…:00.5Z"), and `Date.parse` is worse: it reads a
 * zone-less value in the host's local time zone and drops everything past the millisecond.
 * `canonicalTimestamp` turns every accepted spelling of one instant into one fixed-width UTC
 * string, so that string order is time order and equal instants compare equal.
 */

/** Canonical UTC form of an API timestamp: fixed width `YYYY-MM-DDTHH:MM:SS.fffffffZ` (always 7 fractional digits), so string order equals time order, plus epoch ms (floor). */
export interface CanonicalTimestamp {
  key: string;
  ms: number;
}

const ZEROS = "0000000";
/** 9999-12-31T23:59:59Z in epoch seconds: the last second a four-digit year can write. */
const MAX_SECONDS = 253_402_300_799;
/** "00" … "99". */
const TWO_DIGITS = Array.from({ length: 100 }, (_, n) => String(n).padStart(2, "0"));

/** The number written by the two ASCII digits at `at`, or -1. `at + 1` must lie inside `s`. */
function twoDigits(s: string, at: number): number {
  const high = s.charCodeAt(at) - 48;
  const low = s.charCodeAt(at + 1) - 48;
  return high >= 0 && high <= 9 && low >= 0 && low <= 9 ? high * 10 + low : -1;
}

function daysInMonth(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}

/** `YYYY-MM-DDTHH:MM:SS` (UTC) of a count of seconds since the epoch, without going through Date. */
function utcDateTime(seconds: number): string {
  // Days to civil date: Howard Hinnant's algorithm (proleptic Gregorian), for days >= 0.
  const days = Math.floor(seconds / 86_400);
  const secondOfDay = seconds - days * 86_400;
  const z = days + 719_468;
  const era = Math.floor(z / 146_097);
  const dayOfEra = z - era * 146_097;
  const yearOfEra = Math.floor((dayOfEra - Math.floor(dayOfEra / 1460) + Math.floor(dayOfEra / 36_524) - Math.floor(dayOfEra / 146_096)) / 365);
  const dayOfYear = dayOfEra - (365 * yearOfEra + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100));
  const shiftedMonth = Math.floor((5 * dayOfYear + 2) / 153); // 0 = March
  const day = dayOfYear - Math.floor((153 * shiftedMonth + 2) / 5) + 1;
  const month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9;
  const year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0);
  const hour = Math.floor(secondOfDay / 3600);
  const minute = Math.floor((secondOfDay - hour * 3600) / 60);
  const second = secondOfDay - hour * 3600 - minute * 60;
  return `${year}-${TWO_DIGITS[month]}-${TWO_DIGITS[day]}T${TWO_DIGITS[hour]}:${TWO_DIGITS[minute]}:${TWO_DIGITS[second]}`;
}

/**
 * Parses an ISO-8601 timestamp into its canonical UTC form, or returns undefined.
 *
 * Accepted: `YYYY-MM-DDTHH:MM:SS`, then optionally `.` and 1–7 fractional digits, then a zone of
 * `Z`, `z`, `±hh:mm`, `±hhmm`, or none at all, which means UTC (never the host's zone). The
 * separator must be an upper-case `T` (RFC 3339's lower-case `t` is rejected: neither API sends
 * it), and the digits ASCII.
 *
 * Rejected: anything else, including an impossible date or time (February 30, month 13, hour 24,
 * minute or second 60), an offset beyond ±23:59, more than 7 fractional digits, a written year
 * outside 1970–9999, and an instant (after applying the offset) outside
 * 1970-01-01T00:00:00Z … 9999-12-31T23:59:59.9999999Z.
 *
 * Offsets are applied to whole seconds with integer arithmetic; the fraction is carried through
 * digit for digit. No regular expression and no Date object: this runs once per alert.
 */
export function canonicalTimestamp(value: string): CanonicalTimestamp | undefined {
  const length = value.length;
  // Shortest: "YYYY-MM-DDTHH:MM:SS" (19); longest: 7 fractional digits and "+hh:mm" (33).
  if (length < 19 || length > 33) return undefined;
  if (
    value.charCodeAt(4) !== 45 /* - */ ||
    value.charCodeAt(7) !== 45 ||
    value.charCodeAt(10) !== 84 /* T */ ||
    value.charCodeAt(13) !== 58 /* : */ ||
    value.charCodeAt(16) !== 58
  ) {
    return undefined;
  }
  const century = twoDigits(value, 0);
  const yearOfCentury = twoDigits(value, 2);
  const month = twoDigits(value, 5);
  const day = twoDigits(value, 8);
  const hour = twoDigits(value, 11);
  const minute = twoDigits(value, 14);
  const second = twoDigits(value, 17);
  if (century < 0 || yearOfCentury < 0 || day < 0 || hour < 0 || minute < 0 || second < 0) return undefined;
  const year = century * 100 + yearOfCentury;
  if (year < 1970 || month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return undefined;
  if (hour > 23 || minute > 59 || second > 59) return undefined;

  // The fraction: digits from position 20 when position 19 holds a dot.
  let zoneAt = 19;
  let fractionDigits = 0;
  if (length > 19 && value.charCodeAt(19) === 46 /* . */) {
    zoneAt = 20;
    while (zoneAt < length) {
      const c = value.charCodeAt(zoneAt);
      if (c < 48 || c > 57) break;
      zoneAt++;
    }
    fractionDigits = zoneAt - 20;
    if (fractionDigits < 1 || fractionDigits > 7) return undefined;
  }

  // The zone: none, Z/z, or a signed offset with or without its colon.
  let offsetSeconds = 0;
  const zoneLength = length - zoneAt;
  if (zoneLength === 1) {
    const z = value.charCodeAt(zoneAt);
    if (z !== 90 /* Z */ && z !== 122 /* z */) return undefined;
  } else if (zoneLength === 5 || zoneLength === 6) {
    const sign = value.charCodeAt(zoneAt);
    if (sign !== 43 /* + */ && sign !== 45 /* - */) return undefined;
    const offsetHours = twoDigits(value, zoneAt + 1);
    if (zoneLength === 6 && value.charCodeAt(zoneAt + 3) !== 58 /* : */) return undefined;
    const offsetMinutes = twoDigits(value, zoneLength === 6 ? zoneAt + 4 : zoneAt + 3);
    if (offsetHours < 0 || offsetHours > 23 || offsetMinutes < 0 || offsetMinutes > 59) return undefined;
    offsetSeconds = (offsetHours * 3600 + offsetMinutes * 60) * (sign === 43 ? 1 : -1);
  } else if (zoneLength !== 0) return undefined;

  const seconds = Date.UTC(year, month - 1, day) / 1000 + hour * 3600 + minute * 60 + second - offsetSeconds;
  if (seconds < 0 || seconds > MAX_SECONDS) return undefined;
  let milliseconds = 0;
  for (let at = 20; at < 23; at++) milliseconds = milliseconds * 10 + (at < zoneAt ? value.charCodeAt(at) - 48 : 0);
  const ms = seconds * 1000 + milliseconds;

  // Already canonical (7 digits and "Z", the usual Defender spelling): the value is the key.
  if (fractionDigits === 7 && zoneLength === 1 && value.charCodeAt(27) === 90) return { key: value, ms };
  const fraction = fractionDigits === 7 ? value.slice(20, 27) : value.slice(20, zoneAt) + ZEROS.slice(fractionDigits);
  // Without an offset the date and time are already UTC and are copied as written.
  const wholeSeconds = offsetSeconds === 0 ? value.slice(0, 19) : utcDateTime(seconds);
  return { key: `${wholeSeconds}.${fraction}Z`, ms };
}
