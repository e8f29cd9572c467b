import { hash } from "node:crypto";

/**
 * The closed `lastUpdateTime` window the next pull reads, or undefined when there is nothing to
 * read yet. Its end is settled by the API's clock as well as ours: when the host runs ahead of
 * the service (`skewMs` < 0), ending the window by the host's clock would mark as read a span
 * the service has not finished filling.
 */
export function nextWindow(input: {
  watermark: string | undefined;
  now: number;
  skewMs: number | undefined;
  overlapMs: number;
  settleMs: number;
  firstRunLookbackMs: number;
}): { from: number; to: number } | undefined {
  const to = input.now + Math.min(0, input.skewMs ?? 0) - input.settleMs;
  const watermark = input.watermark === undefined ? Number.NaN : Date.parse(input.watermark);
  const from = Number.isFinite(watermark) ? watermark - input.overlapMs : input.now - input.firstRunLookbackMs;
  if (!(to > from)) return undefined;
  return { from, to };
}

/**
 * An alert version is (id, lastUpdateTime): a new lastUpdateTime for a known id is news. The
 * time enters in its canonical UTC form, so one instant written two ways is one version.
 */
export function versionHash(alert: { id: string; updatedAtKey: string }): string {
  // One-shot hashing: a hash object per alert was a visible cost on 100,000-alert backlogs.
  return hash("sha256", `${alert.id}\n${alert.updatedAtKey}`, "base64url").slice(0, 16);
}

/** The same for an element the pipeline could not read as an alert: its raw text stands for it. */
export function rawHash(raw: string): string {
  return `raw:${hash("sha256", raw, "base64url").slice(0, 16)}`;
}

export const isoMs = (ms: number): string => new Date(ms).toISOString();
