import type { PullHealth } from "../pull/health";
import type { TenantRecord } from "../state/tenantRegistry";

/**
 * The status an operator sees: the registry's status, with `connected` split by pull health into
 * healthy and degraded.
 */
export const CONSOLE_STATUSES = ["reconsent_required", "degraded", "pending_consent", "healthy", "offboarded"] as const;
export type ConsoleStatus = (typeof CONSOLE_STATUSES)[number];

export const STATUS_LABELS: Readonly<Record<ConsoleStatus, string>> = {
  healthy: "Healthy",
  degraded: "Degraded",
  reconsent_required: "Re-consent required",
  pending_consent: "Pending consent",
  offboarded: "Offboarded",
};

/** A connected tenant without a successful pull for this many cycles is degraded. */
const STALE_CYCLES = 3;
/** Room for the run itself on top of the cycles. */
const STALE_GRACE_MS = 60_000;

export interface StatusVerdict {
  status: ConsoleStatus;
  /** Why a connected tenant is degraded, in words an operator can act on. */
  reasons: string[];
}

function minutes(ms: number): string {
  const m = Math.round(ms / 60_000);
  return m < 120 ? `${m} min` : `${Math.round(m / 60)} h`;
}

export function consoleStatusOf(record: TenantRecord, health: PullHealth | undefined, now: number, cycleMs: number): StatusVerdict {
  if (record.status !== "connected") return { status: record.status, reasons: [] };
  const reasons: string[] = [];
  if (health && health.consecutiveFailures > 0) {
    reasons.push(
      `${health.consecutiveFailures} failed pull${health.consecutiveFailures === 1 ? "" : "s"} in a row` +
        (health.lastPullErrorCode ? ` (last: ${health.lastPullErrorCode})` : ""),
    );
  }
  for (const warning of health?.warnings ?? []) reasons.push(`Warning ${warning.code}: ${warning.message}`);
  const staleAfter = STALE_CYCLES * cycleMs + STALE_GRACE_MS;
  const lastSuccess = health?.lastSuccessfulPullAt ? Date.parse(health.lastSuccessfulPullAt) : undefined;
  if (lastSuccess !== undefined && now - lastSuccess > staleAfter) {
    reasons.push(`No successful pull for ${minutes(now - lastSuccess)} (more than ${STALE_CYCLES} cycles)`);
  } else if (lastSuccess === undefined) {
    // Not pulled yet: fine right after the consent, not after several cycles.
    const since = Date.parse(record.consentedAt ?? record.updatedAt);
    if (Number.isFinite(since) && now - since > staleAfter) {
      reasons.push(`No successful pull since the consent ${minutes(now - since)} ago (more than ${STALE_CYCLES} cycles)`);
    }
  }
  return { status: reasons.length > 0 ? "degraded" : "healthy", reasons };
}

/**
 * The average interval of an NCRONTAB schedule ("{second} {minute} {hour} {day} {month}
 * {day-of-week}", or five fields without seconds), from how often it fires in a day. Day, month
 * and weekday fields are ignored: the pull schedule runs all day, every day. Unreadable: 5 minutes.
 */
export function estimateCycleMs(schedule: string): number {
  const FALLBACK = 5 * 60_000;
  const fields = schedule.trim().split(/\s+/);
  const [second, minute, hour] = fields.length === 6 ? fields : fields.length === 5 ? ["0", ...fields] : [];
  if (second === undefined || minute === undefined || hour === undefined) return FALLBACK;
  const seconds = expand(second, 0, 59);
  const minutesSet = expand(minute, 0, 59);
  const hours = expand(hour, 0, 23);
  if (!seconds || !minutesSet || !hours) return FALLBACK;
  const perDay = seconds.size * minutesSet.size * hours.size;
  return perDay > 0 ? Math.round(86_400_000 / perDay) : FALLBACK;
}

/** The values of one cron field: `*`, `n`, `a-b`, `*\/s`, `a-b/s`, `a/s`, and lists of these. */
function expand(field: string, min: number, max: number): Set<number> | undefined {
  const values = new Set<number>();
  for (const part of field.split(",")) {
    const match = /^(\*|\d+)(?:-(\d+))?(?:\/(\d+))?$/.exec(part);
    if (!match) return undefined;
    const step = match[3] === undefined ? 1 : Number(match[3]);
    const from = match[1] === "*" ? min : Number(match[1]);
    const to = match[2] !== undefined ? Number(match[2]) : match[1] === "*" || match[3] !== undefined ? max : from;
    if (step < 1 || from < min || to > max || from > to) return undefined;
    for (let v = from; v <= to; v += step) values.add(v);
  }
  return values;
}
