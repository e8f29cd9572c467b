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

  it("with no bytes keeps nothing (every pull reads its row)", () => {
    const rows = new WrittenRows(0);
    rows.set("a", row(1), "W/1");
    expect(rows.get("a")).toBeUndefined();
    expect(rows.size).toBe(0);
  });
});
