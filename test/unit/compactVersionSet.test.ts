import { describe, expect, it } from "vitest";
import { CompactVersionSet } from "../../shared/pull/compactVersionSet";
import { decodeDelivered, encodeDelivered } from "../../shared/pull/deliveredVersions";
import { versionHash } from "../../shared/pull/window";
import { seededRandom } from "../harness/random";

const hashOf = (n: number): string => versionHash({ id: `da${n}_${n * 7}`, updatedAtKey: `2026-11-23T10:00:00.${String(n % 10_000_000).padStart(7, "0")}Z` });

describe("CompactVersionSet", () => {
  it("behaves as a Map<string, number> through a long random sequence of sets, deletes, clears and deletes while iterating", () => {
    const random = seededRandom(1414);
    const pool = [
      ...Array.from({ length: 600 }, (_, n) => hashOf(n)),
      // Not version hashes: wrong length, characters outside base64url, the empty string.
      "h1",
      "",
      "AAAAAAAAAAAAAAA",
      "AAAAAAAAAAAAAAAAA",
      "AAAAAAAAAAAAAAA+",
      "AAAAAAAAAAAAAA==",
      "ééééééééééééééé_",
      "________________",
      "AAAAAAAAAAAAAAAA",
    ];
    const compact = new CompactVersionSet();
    const reference = new Map<string, number>();
    const sorted = (entries: Iterable<[string, number]>): [string, number][] => [...entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    // Sized to stay quick through Stryker's instrumented build (docs/mutation.md): the table still
    // grows, fills with tombstones, is rebuilt and cleared many times over.
    for (let step = 0; step < 8_000; step++) {
      const key = pool[Math.floor(random() * pool.length)] ?? "";
      const roll = random();
      if (roll < 0.55) {
        const at = Math.floor(random() * 2 ** 33) - 2 ** 31; // beyond 32 bits either way
        compact.set(key, at);
        reference.set(key, at);
      } else if (roll < 0.85) expect(compact.delete(key)).toBe(reference.delete(key));
      else if (roll < 0.9999) {
        expect(compact.has(key)).toBe(reference.has(key));
        expect(compact.get(key)).toBe(reference.get(key));
      } else {
        compact.clear();
        reference.clear();
      }
      if (step % 1000 === 999) {
        // Pruning as the pull does it: delete while iterating.
        const limit = Math.floor(random() * 2 ** 32) - 2 ** 31;
        for (const [hash, at] of compact) if (at < limit) compact.delete(hash);
        for (const [hash, at] of reference) if (at < limit) reference.delete(hash);
        expect(compact.size).toBe(reference.size);
        expect(sorted(compact)).toEqual(sorted(reference));
      }
    }
    expect(compact.size).toBe(reference.size);
    expect(compact.size).toBeGreaterThan(100);
    expect(sorted(compact.entries())).toEqual(sorted(reference.entries()));
    expect([...compact.keys()].sort()).toEqual([...reference.keys()].sort());
    expect([...compact.values()].sort()).toEqual([...reference.values()].sort());
    const visited: [string, number][] = [];
    compact.forEach((at, key, map) => {
      expect(map).toBe(compact);
      visited.push([key, at]);
    });
    expect(sorted(visited)).toEqual(sorted(reference));
  });

  it("gives back exactly the version hashes it was given, through the pull state's own codec", () => {
    const entries: [string, number][] = Array.from({ length: 3_000 }, (_, n) => [hashOf(n), 1_795_000_000 + n]);
    const compact = new CompactVersionSet(entries);
    expect(compact.size).toBe(3_000);
    const decoded = decodeDelivered(encodeDelivered(compact, { unbounded: true }) ?? {});
    expect(decoded.size).toBe(3_000);
    for (const [hash, at] of entries) expect(decoded.get(hash)).toBe(at);
    // And a decoded set converts back without loss.
    expect(new CompactVersionSet(decoded).size).toBe(3_000);
  });

  // The bound holds at any size (a growth leaves the table half full); the bench shows it at a
  // 1,000,000-alert backlog.
  it("holds 30,000 versions in at most 42 bytes each, where a Map of strings takes about 120", () => {
    const random = seededRandom(200_000);
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const keys = Array.from({ length: 30_001 }, () => Array.from({ length: 16 }, () => alphabet.charAt(Math.floor(random() * 64))).join(""));
    const compact = new CompactVersionSet();
    for (let n = 0; n < 30_000; n++) compact.set(keys[n] ?? "", 1_795_000_000 + n);
    expect(compact.size).toBe(30_000);
    expect(compact.tableBytes / compact.size).toBeLessThanOrEqual(42);
    expect(compact.get(keys[12_345] ?? "")).toBe(1_795_012_345);
    expect(compact.has(keys[30_000] ?? "")).toBe(false);
  });
});

describe("CompactVersionSet under churn", () => {
  const keyOf = (n: number): string => hashOf(n);

  it("reuses deleted slots: a pull that prunes as many versions as it adds keeps its table the same size", () => {
    const compact = new CompactVersionSet();
    for (let n = 0; n < 1000; n++) compact.set(keyOf(n), n);
    const sizes = new Set([compact.tableBytes]);
    // 50 rounds: prune the oldest 100 versions, add 100 new ones; never more than 1,000 live.
    for (let round = 0; round < 50; round++) {
      for (let n = round * 100; n < round * 100 + 100; n++) expect(compact.delete(keyOf(n))).toBe(true);
      for (let n = 1000 + round * 100; n < 1100 + round * 100; n++) compact.set(keyOf(n), n);
      expect(compact.size).toBe(1000);
      sizes.add(compact.tableBytes);
    }
    // Tombstones are swept by rebuilding at the same size: the table grows once (to leave room
    // for the tombstones between sweeps), then stays at that size through 5,000 more versions.
    expect([...sizes]).toEqual([1395 * 21, 2093 * 21]);
    for (let n = 5000; n < 6000; n++) expect(compact.get(keyOf(n))).toBe(n);
    for (let n = 0; n < 5000; n += 97) expect(compact.has(keyOf(n))).toBe(false);
  });

  it("starts small and goes back to its smallest table when cleared", () => {
    const compact = new CompactVersionSet();
    const smallest = compact.tableBytes;
    expect(smallest).toBe(16 * (12 + 8 + 1));
    for (let n = 0; n < 12; n++) compact.set(keyOf(n), n);
    expect(compact.tableBytes).toBe(smallest);
    compact.set(keyOf(12), 12);
    expect(compact.tableBytes).toBe(24 * (12 + 8 + 1));
    compact.clear();
    expect(compact.size).toBe(0);
    expect(compact.tableBytes).toBe(smallest);
    for (let n = 0; n < 13; n++) compact.set(keyOf(n), n);
    expect([...compact.keys()].sort()).toEqual(Array.from({ length: 13 }, (_, n) => keyOf(n)).sort());
  });

  it("overwrites a version's time in place and a second delete of it answers false", () => {
    const compact = new CompactVersionSet([[keyOf(1), 10]]);
    compact.set(keyOf(1), 20);
    expect(compact.size).toBe(1);
    expect(compact.get(keyOf(1))).toBe(20);
    expect(compact.delete(keyOf(1))).toBe(true);
    expect(compact.delete(keyOf(1))).toBe(false);
    expect(compact.get(keyOf(1))).toBeUndefined();
    // A key that is not a version hash lives beside the table and counts in size.
    compact.set("not-a-hash", 5);
    expect(compact.size).toBe(1);
    expect([...compact]).toEqual([["not-a-hash", 5]]);
  });

  it("never yields a version deleted during the iteration, even after the table was rebuilt under it", () => {
    const compact = new CompactVersionSet(Array.from({ length: 12 }, (_, n): [string, number] => [keyOf(n), n]));
    const yielded: string[] = [];
    for (const [key] of compact) {
      yielded.push(key);
      if (yielded.length > 1) continue;
      // The first step adds a version (the table grows) and prunes every other one.
      compact.set(keyOf(100), 100);
      for (let n = 0; n < 12; n++) if (keyOf(n) !== key) compact.delete(keyOf(n));
    }
    expect(yielded.slice(1).filter((key) => !compact.has(key))).toEqual([]);
    expect(compact.size).toBe(2);
  });

  it("tells apart version hashes that differ in one 32-bit word only, the one in the first slot included", () => {
    // 16 base64url characters, 96 bits: characters 0-5 fill the first word, 5-10 the second, 10-15 the third.
    const base = "AAAAAAAAAAAAAAAA";
    const differing = [1, 8, 14].map((at) => `${base.slice(0, at)}B${base.slice(at + 1)}`);
    const compact = new CompactVersionSet([[base, 1]]);
    differing.forEach((key, n) => compact.set(key, n + 2));
    // The all-zero hash starts at slot 0 and the others probe past it.
    expect(compact.has(base)).toBe(true);
    expect([base, ...differing].map((key) => compact.get(key))).toEqual([1, 2, 3, 4]);
    expect(compact.size).toBe(4);
    expect(compact.delete(differing[0]!)).toBe(true);
    expect([base, ...differing].map((key) => compact.has(key))).toEqual([true, false, true, true]);
  });

  it("keeps a key with a character outside ASCII at any place as it is, beside the table", () => {
    const keys = [0, 1, 2, 3, 5, 15].map((at) => `${"A".repeat(at)}é${"A".repeat(15 - at)}`);
    const compact = new CompactVersionSet(keys.map((key, n): [string, number] => [key, n]));
    expect(compact.tableBytes).toBe(16 * 21);
    expect([...compact.keys()].sort()).toEqual([...keys].sort());
    expect(keys.map((key) => compact.get(key))).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it("grows at a sweep only when more than half of the larger table would be live", () => {
    // 16 slots: 12 used starts a sweep; the table grows when the live versions plus the new one
    // pass 16 × 3/4 ÷ 1.5 = 8.
    const sized = (live: number): number => {
      const compact = new CompactVersionSet();
      for (let n = 0; n < 12; n++) compact.set(keyOf(n), n);
      for (let n = live; n < 12; n++) compact.delete(keyOf(n));
      compact.set(keyOf(99), 99);
      expect(compact.size).toBe(live + 1);
      return compact.tableBytes / 21;
    };
    expect([6, 7, 8, 9].map(sized)).toEqual([16, 16, 24, 24]);
  });
});
