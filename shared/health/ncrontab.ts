/**
 * NCRONTAB validation for PULL_SCHEDULE, by the rules of the library the Functions host parses
 * timer schedules with (NCrontab: six fields, `second minute hour day month day-of-week`), so a
 * schedule the host would refuse, and therefore a timer that would silently never run, is refused
 * when the app starts instead.
 *
 * Per field: `*`, a number, a range `a-b`, any of those with a step `/n`, and comma lists of them.
 * Months and days of the week also take names (`Jan`, `Mon-Fri`, case-insensitive).
 *
 * Deliberately stricter than the host where the host's leniency hides a mistake:
 * - a step must be 1 up to the field's span (the host treats `*\/99` on hours as "hour 0" and
 *   `*\/0` as `*`);
 * - a range must ascend (the host swaps `22-2` into `2-22`, the opposite of what was meant);
 * - a name needs at least three letters (the host reads `T` as Tuesday, first match wins);
 * - a day of month no selected month has (`0 0 0 31 2 *`) is refused: the timer would never fire.
 * The five-field cron form and the `hh:mm:ss` TimeSpan form are refused: the first is not what the
 * Functions documentation promises, the second is not supported on consumption plans.
 */

interface FieldRule {
  /** How messages name the field. */
  label: string;
  min: number;
  max: number;
  names?: readonly string[];
}

const MONTH_NAMES = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december"];
const DAY_NAMES = ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"];

export const NCRONTAB_FIELDS: readonly FieldRule[] = [
  { label: "second", min: 0, max: 59 },
  { label: "minute", min: 0, max: 59 },
  { label: "hour", min: 0, max: 23 },
  { label: "day", min: 1, max: 31 },
  { label: "month", min: 1, max: 12, names: MONTH_NAMES },
  { label: "day-of-week", min: 0, max: 6, names: DAY_NAMES },
];

/** Longest month by month number (February counts its leap day: the schedule fires in leap years). */
const DAYS_IN_MONTH = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

class FieldError extends Error {}

function parseValue(rule: FieldRule, text: string): number {
  if (/^\d+$/.test(text)) {
    const value = Number.parseInt(text, 10);
    if (value < rule.min || value > rule.max) {
      throw new FieldError(`${value} is outside the ${rule.label} field's range (${rule.min}-${rule.max})`);
    }
    return value;
  }
  if (rule.names && /^[A-Za-z]+$/.test(text)) {
    if (text.length < 3) throw new FieldError(`a ${rule.label} name needs at least three letters`);
    const index = rule.names.findIndex((name) => name.startsWith(text.toLowerCase()));
    if (index < 0) throw new FieldError(`the ${rule.label} field has an unknown name`);
    return index + rule.min;
  }
  throw new FieldError(
    rule.names
      ? `the ${rule.label} field takes numbers ${rule.min}-${rule.max} or names, with *, -, / and ,`
      : `the ${rule.label} field takes numbers ${rule.min}-${rule.max} with *, -, / and ,`,
  );
}

/** One comma-separated element: the values it selects. */
function parseElement(rule: FieldRule, element: string): number[] {
  if (element === "") throw new FieldError(`the ${rule.label} field has an empty list element`);
  let base = element;
  let step: number | undefined;
  const slash = element.indexOf("/");
  if (slash >= 0) {
    base = element.slice(0, slash);
    const stepText = element.slice(slash + 1);
    if (base === "" || !/^\d+$/.test(stepText)) throw new FieldError(`the ${rule.label} field has a malformed step`);
    step = Number.parseInt(stepText, 10);
    const span = rule.max - rule.min;
    if (step < 1 || step > span) {
      throw new FieldError(`step ${step} of the ${rule.label} field must be from 1 to ${span}, the field's range (${rule.min}-${rule.max})`);
    }
  }
  let from: number;
  let to: number;
  if (base === "*") {
    from = rule.min;
    to = rule.max;
  } else if (base.includes("-")) {
    const parts = base.split("-");
    if (parts.length !== 2 || parts[0] === "" || parts[1] === "") throw new FieldError(`the ${rule.label} field has a malformed range`);
    from = parseValue(rule, parts[0] as string);
    to = parseValue(rule, parts[1] as string);
    if (from > to) throw new FieldError(`a range in the ${rule.label} field must ascend (the host would swap its ends)`);
  } else {
    from = parseValue(rule, base);
    // A single value with a step runs to the field's end, as in the host: 5/15 = 5,20,35,50.
    to = step === undefined ? from : rule.max;
  }
  const values: number[] = [];
  for (let value = from; value <= to; value += step ?? 1) values.push(value);
  return values;
}

/** The values each of the six fields selects, or why the expression is not a valid NCRONTAB. */
export function parseNcrontab(expression: string): { fields: number[][] } | { problem: string } {
  const parts = expression.trim().split(/\s+/).filter(Boolean);
  if (parts.length !== NCRONTAB_FIELDS.length) {
    return { problem: `it has ${parts.length} field${parts.length === 1 ? "" : "s"}, not six (second minute hour day month day-of-week)` };
  }
  const fields: number[][] = [];
  try {
    NCRONTAB_FIELDS.forEach((rule, i) => {
      const selected = new Set<number>();
      for (const element of (parts[i] as string).split(",")) for (const value of parseElement(rule, element)) selected.add(value);
      fields.push([...selected].sort((a, b) => a - b));
    });
  } catch (error) {
    if (error instanceof FieldError) return { problem: error.message };
    throw error;
  }
  const days = fields[3] as number[];
  const months = fields[4] as number[];
  const longest = Math.max(...months.map((month) => DAYS_IN_MONTH[month - 1] ?? 31));
  if (Math.min(...days) > longest) return { problem: "no selected month has the selected day, so the timer would never fire" };
  return { fields };
}

/** Why `expression` is not a schedule the Functions host runs, or undefined when it is one. */
export function ncrontabProblem(expression: string): string | undefined {
  const parsed = parseNcrontab(expression);
  return "problem" in parsed ? parsed.problem : undefined;
}
