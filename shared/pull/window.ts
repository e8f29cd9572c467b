import { hash } from "node:crypto";
import type { DefenderAlert } from "../defender/types";

/** The closed `lastUpdateTime` window the next pull reads, or undefined when there is nothing to read yet. */
export function nextWindow(
  input: { watermark: string | undefined; now: number; overlapMs: number; settleMs: number; firstRunLookbackMs: number },
): { from: string; to: string } | undefined {
  const to = input.now - input.settleMs;
  const from = input.watermark ? Date.parse(input.watermark) - input.overlapMs : input.now - input.firstRunLookbackMs;
  if (!(to > from)) return undefined;
  return { from: new Date(from).toISOString(), to: new Date(to).toISOString() };
}

/** An alert version is (id, lastUpdateTime): a new lastUpdateTime for a known id is news. */
export function versionHash(alert: Pick<DefenderAlert, "id" | "lastUpdateTime">): string {
  // One-shot hashing: a hash object per alert was a visible cost on 100,000-alert backlogs.
  return hash("sha256", `${alert.id}\n${alert.lastUpdateTime}`, "base64url").slice(0, 16);
}

/** lastUpdateTime in epoch seconds; precise enough to decide when a version leaves the overlap. */
export function updatedAtSeconds(alert: Pick<DefenderAlert, "lastUpdateTime">): number {
  const ms = Date.parse(alert.lastUpdateTime);
  return Number.isFinite(ms) ? Math.floor(ms / 1000) : 0;
}
