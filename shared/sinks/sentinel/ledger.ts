import type { AlertBatchKey, StoredVersion } from "../alertSink";
import { canonicalTimestamp } from "../../time/timestamps";

export type PageBounds = Pick<AlertBatchKey, "tenantId" | "pageFrom" | "pageTo">;

/** How many versions the ledger remembers across all pages (about 120 bytes each). */
export const LEDGER_MAX_VERSIONS = 50_000;

/**
 * The versions this process has seen Log Analytics accept (a 204), by page bounds, most recently
 * used last. Logs Ingestion has no idempotency key: a page retried after a partial failure would
 * otherwise send again the chunks that went through. It lives in memory only, so another
 * instance, or this one after a restart, re-sends (at least once, never less).
 */
export class IngestedLedger {
  private readonly pages = new Map<string, Map<string, StoredVersion>>();
  private total = 0;

  constructor(private readonly maxVersions = LEDGER_MAX_VERSIONS) {}

  has(page: PageBounds, version: StoredVersion): boolean {
    return this.pages.get(pageKey(page))?.has(versionKey(version)) === true;
  }

  add(page: PageBounds, versions: readonly StoredVersion[]): void {
    const key = pageKey(page);
    const entry = this.pages.get(key) ?? new Map<string, StoredVersion>();
    // Re-inserted so the page counts as the most recently used.
    this.pages.delete(key);
    this.pages.set(key, entry);
    for (const version of versions) {
      const id = versionKey(version);
      if (entry.has(id)) continue;
      entry.set(id, version);
      this.total++;
    }
    this.evict(key);
  }

  stored(page: PageBounds): StoredVersion[] {
    return [...(this.pages.get(pageKey(page))?.values() ?? [])];
  }

  /** Oldest pages first; the page just written stays even if it alone is over the cap. */
  private evict(keep: string): void {
    for (const [key, entry] of this.pages) {
      if (this.total <= this.maxVersions) return;
      if (key === keep) continue;
      this.pages.delete(key);
      this.total -= entry.size;
    }
  }
}

/** Bounds in canonical form, so one instant spelled two ways is one page. */
function pageKey(page: PageBounds): string {
  const bound = (value: string): string => canonicalTimestamp(value)?.key ?? value;
  return `${page.tenantId}\n${bound(page.pageFrom)}\n${bound(page.pageTo)}`;
}

function versionKey(version: StoredVersion): string {
  return `${version.id}\n${version.updatedAtKey}`;
}
