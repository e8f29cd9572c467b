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
      ...Array.from({ length: 3000 }, (_, n) => hashOf(n)),
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
    for (let step = 0; step < 40_000; step++) {
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
      if (step % 5000 === 4999) {
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
    const entries: [string, number][] = Array.from({ length: 20_000 }, (_, n) => [hashOf(n), 1_795_000_000 + n]);
    const compact = new CompactVersionSet(entries);
    expect(compact.size).toBe(20_000);
    const decoded = decodeDelivered(encodeDelivered(compact, { unbounded: true }) ?? {});
    expect(decoded.size).toBe(20_000);
    for (const [hash, at] of entries) expect(decoded.get(hash)).toBe(at);
    // And a decoded set converts back without loss.
    expect(new CompactVersionSet(decoded).size).toBe(20_000);
  });

  it("holds 200,000 versions in at most 42 bytes each, where a Map of strings takes about 120", () => {
    const random = seededRandom(200_000);
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const keys = Array.from({ length: 200_001 }, () => Array.from({ length: 16 }, () => alphabet.charAt(Math.floor(random() * 64))).join(""));
    const compact = new CompactVersionSet();
    for (let n = 0; n < 200_000; n++) compact.set(keys[n] ?? "", 1_795_000_000 + n);
    expect(compact.size).toBe(200_000);
    expect(compact.tableBytes / compact.size).toBeLessThanOrEqual(42);
    expect(compact.get(keys[123_456] ?? "")).toBe(1_795_123_456);
    expect(compact.has(keys[200_000] ?? "")).toBe(false);
  });
});
