import { describe, expect, it } from "vitest";
import { WrittenRows } from "../../shared/pull/writtenRows";

/** A row whose estimated size is about `chars` × 2 bytes. */
const row = (chars: number) => ({ partitionKey: "t", delivered: "x".repeat(chars) });

describe("WrittenRows: the pull-state rows a process keeps to claim without a read", () => {
  it("gives back the row and ETag written last for a tenant", () => {
    const rows = new WrittenRows(1_000_000);
    rows.set("a", row(10), "W/1");
    rows.set("a", row(20), "W/2");
    expect(rows.get("a")).toEqual({ row: row(20), etag: "W/2" });
    expect(rows.get("b")).toBeUndefined();
    expect(rows.size).toBe(1);
  });

  it("stays within its bytes by dropping the tenant used longest ago", () => {
    const rows = new WrittenRows(3 * 2 * 1000 + 600);
    for (const id of ["a", "b", "c"]) rows.set(id, row(1000), `W/${id}`);
    expect(rows.size).toBe(3);
    // Used just now: kept over b, which is dropped for d.
    expect(rows.get("a")?.etag).toBe("W/a");
    rows.set("d", row(1000), "W/d");
    expect(rows.get("b")).toBeUndefined();
    expect([rows.get("a")?.etag, rows.get("c")?.etag, rows.get("d")?.etag]).toEqual(["W/a", "W/c", "W/d"]);
    expect(rows.usedBytes).toBeLessThanOrEqual(3 * 2 * 1000 + 600);
    expect(rows.usedBytes).toBeGreaterThan(3 * 2 * 1000);
  });

  it("keeps no row larger than the whole bound, and counts what it forgets", () => {
    const rows = new WrittenRows(1000);
    rows.set("big", row(1000), "W/1");
    expect(rows.get("big")).toBeUndefined();
    expect(rows.usedBytes).toBe(0);
    rows.set("small", row(10), "W/2");
    const used = rows.usedBytes;
    expect(used).toBeGreaterThan(20);
    rows.delete("small");
    rows.delete("small");
    expect(rows.usedBytes).toBe(0);
    rows.set("small", row(10), "W/3");
    rows.set("small", row(10), "W/4");
    expect(rows.usedBytes).toBe(used);
  });

  it("counts a row as its row, ETag and tenant id, and keeps rows that fill the bound exactly", () => {
    // Per property: the name, two bytes a character of a string value (8 for any other), 16 more.
    const exact = { partitionKey: "t", n: 5 };
    const rowBytes = "partitionKey".length + 2 + 16 + ("n".length + 8 + 16);
    const etag = "W/etag-12";
    const bytes = rowBytes + etag.length + "tenant-a".length;
    const fits = new WrittenRows(bytes);
    fits.set("tenant-a", exact, etag);
    expect(fits.usedBytes).toBe(bytes);
    expect(fits.get("tenant-a")?.etag).toBe(etag);
    const short = new WrittenRows(bytes - 1);
    short.set("tenant-a", exact, etag);
    expect(short.get("tenant-a")).toBeUndefined();
    // Two such rows (tenant ids of the same length) in a bound of exactly both: neither is dropped.
    const two = new WrittenRows(2 * bytes);
    two.set("tenant-a", exact, etag);
    two.set("tenant-b", exact, etag);
    expect(two.size).toBe(2);
    expect(two.usedBytes).toBe(2 * bytes);
  });

  it("with no bytes keeps nothing (every pull reads its row)", () => {
    const rows = new WrittenRows(0);
    rows.set("a", row(1), "W/1");
    expect(rows.get("a")).toBeUndefined();
    expect(rows.size).toBe(0);
  });
});
