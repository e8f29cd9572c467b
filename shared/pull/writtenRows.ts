/**
 * The pull-state rows this process wrote last, with the ETag each write got back, bounded by
 * their size. A tenant whose row is here can be claimed by a conditional write under that ETag
 * without reading the row first: if anyone else wrote it since (another instance, a reset, a
 * recorded failure), the ETag no longer matches and the claim is refused, so a stale copy can
 * cost a wasted write but never a wrong one.
 */
export interface WrittenRow {
  row: Readonly<Record<string, unknown>>;
  etag: string;
}

/** Rows the tests and a default instance keep: a 2 KB row each is about 16,000 tenants. */
export const DEFAULT_WRITTEN_ROWS_BYTES = 32 * 1024 * 1024;

export class WrittenRows {
  private readonly rows = new Map<string, WrittenRow & { bytes: number }>();
  private bytes = 0;

  constructor(private readonly maxBytes: number = DEFAULT_WRITTEN_ROWS_BYTES) {}

  get(tenantId: string): WrittenRow | undefined {
    const entry = this.rows.get(tenantId);
    if (!entry) return undefined;
    // Most recently used last, so the oldest goes first when the bound is reached.
    this.rows.delete(tenantId);
    this.rows.set(tenantId, entry);
    return { row: entry.row, etag: entry.etag };
  }

  set(tenantId: string, row: Readonly<Record<string, unknown>>, etag: string): void {
    this.delete(tenantId);
    const bytes = sizeOf(row) + etag.length + tenantId.length;
    if (bytes > this.maxBytes) return;
    this.rows.set(tenantId, { row, etag, bytes });
    this.bytes += bytes;
    for (const [oldest, entry] of this.rows) {
      if (this.bytes <= this.maxBytes) break;
      this.rows.delete(oldest);
      this.bytes -= entry.bytes;
    }
  }

  delete(tenantId: string): void {
    const entry = this.rows.get(tenantId);
    if (!entry) return;
    this.rows.delete(tenantId);
    this.bytes -= entry.bytes;
  }

  get size(): number {
    return this.rows.size;
  }

  get usedBytes(): number {
    return this.bytes;
  }
}

/** An estimate of what the row holds in memory: its strings' characters, and a word for every other value. */
function sizeOf(row: Readonly<Record<string, unknown>>): number {
  let bytes = 0;
  for (const [key, value] of Object.entries(row)) bytes += key.length + (typeof value === "string" ? value.length * 2 : 8) + 16;
  return bytes;
}
