import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ts from "typescript";
import { describe, expect, it } from "vitest";
import { canonicalTimestamp } from "../../shared/time/timestamps";

const SOURCE = join(__dirname, "../../shared/time/timestamps.ts");

describe("canonicalTimestamp", () => {
  it.each([
    ["2026-11-23T10:00:00.1234567Z", "2026-11-23T10:00:00.1234567Z"],
    ["2026-11-23T10:00:00Z", "2026-11-23T10:00:00.0000000Z"],
    ["2026-11-23T10:00:00z", "2026-11-23T10:00:00.0000000Z"],
    ["2026-11-23T10:00:00.5Z", "2026-11-23T10:00:00.5000000Z"],
    ["2026-11-23T10:00:00.123Z", "2026-11-23T10:00:00.1230000Z"],
    ["2026-11-23T10:00:00.000001Z", "2026-11-23T10:00:00.0000010Z"],
    // No zone: UTC.
    ["2026-11-23T10:00:00", "2026-11-23T10:00:00.0000000Z"],
    ["2026-11-23T10:00:00.1234567", "2026-11-23T10:00:00.1234567Z"],
    // Offsets, with and without the colon; the fraction is carried through digit for digit.
    ["2026-11-23T15:30:00.1234567+05:30", "2026-11-23T10:00:00.1234567Z"],
    ["2026-11-23T02:00:00.9999999-0800", "2026-11-23T10:00:00.9999999Z"],
    ["2026-11-23T10:00:00+00:00", "2026-11-23T10:00:00.0000000Z"],
    ["2026-11-23T10:00:00-00:00", "2026-11-23T10:00:00.0000000Z"],
    // Offsets that cross a day, a month, a year, and February 29.
    ["2027-01-01T01:00:00+02:00", "2026-12-31T23:00:00.0000000Z"],
    ["2024-02-28T23:30:00.25-01:00", "2024-02-29T00:30:00.2500000Z"],
    ["2024-03-01T00:59:59.0000001+0100", "2024-02-29T23:59:59.0000001Z"],
    // The edges of the range.
    ["1970-01-01T00:00:00Z", "1970-01-01T00:00:00.0000000Z"],
    ["9999-12-31T23:59:59.9999999Z", "9999-12-31T23:59:59.9999999Z"],
    ["2000-02-29T12:00:00Z", "2000-02-29T12:00:00.0000000Z"],
  ])("%s → %s", (value, key) => {
    const canonical = canonicalTimestamp(value);
    expect(canonical?.key).toBe(key);
    // ms is the floor of the instant in epoch milliseconds.
    expect(canonical?.ms).toBe(Date.parse(key));
  });

  it("gives one key and one ms to the same instant written with different offsets and precisions", () => {
    const spellings = [
      "2026-03-08T07:15:42.1200000Z",
      "2026-03-08T07:15:42.12Z",
      "2026-03-08T07:15:42.12",
      "2026-03-08T12:45:42.12+05:30",
      "2026-03-08T12:45:42.120+0530",
      "2026-03-07T23:15:42.1200-08:00",
      "2026-03-08T07:15:42.12+00:00",
    ];
    const results = spellings.map(canonicalTimestamp);
    for (const result of results) expect(result).toEqual({ key: "2026-03-08T07:15:42.1200000Z", ms: Date.UTC(2026, 2, 8, 7, 15, 42, 120) });
  });

  it("floors ms and keeps string order equal to time order", () => {
    expect(canonicalTimestamp("2026-01-01T00:00:00.0009999Z")?.ms).toBe(Date.UTC(2026, 0, 1));
    expect(canonicalTimestamp("2026-01-01T00:00:00.9999999Z")?.ms).toBe(Date.UTC(2026, 0, 1, 0, 0, 0, 999));
    const ordered = [
      "2026-01-01T00:00:00Z",
      "2026-01-01T00:00:00.0000001Z",
      "2026-01-01T00:00:00.5",
      "2026-01-01T01:00:00.5+01:00", // = 00:00:00.5Z
      "2026-01-01T00:00:00.50001Z",
      "2026-01-01T00:00:01Z",
      "2025-12-31T19:00:02-05:00",
    ];
    const keys = ordered.map((value) => canonicalTimestamp(value)?.key ?? "");
    expect([...keys].sort()).toEqual(keys);
    expect(keys[2]).toBe(keys[3]);
  });

  it.each([
    "",
    "2026-11-23",
    "2026-11-23T10:00Z",
    "2026-11-23 10:00:00Z",
    "2026-11-23t10:00:00Z", // lower-case separator: rejected by choice
    "2026-11-23T10:00:00.Z",
    "2026-11-23T10:00:00.12345678Z", // more than 7 fractional digits
    "2026-11-23T10:00:00,5Z",
    "2026-11-23T10:00:00ZZ",
    "2026-11-23T10:00:00+05",
    "2026-11-23T10:00:00+5:30",
    "2026-11-23T10:00:00+05:3",
    "2026-11-23T10:00:00+24:00",
    "2026-11-23T10:00:00+05:60",
    "2026-11-23T10:00:00 ",
    " 2026-11-23T10:00:00Z",
    "2026-11-23T10:00:00Z\n",
    "2026-02-30T10:00:00Z", // February 30
    "2026-02-29T10:00:00Z", // not a leap year
    "1900-02-29T10:00:00Z", // not a leap year either, and out of range
    "2026-13-01T10:00:00Z",
    "2026-00-01T10:00:00Z",
    "2026-04-31T10:00:00Z",
    "2026-11-00T10:00:00Z",
    "2026-11-23T24:00:00Z",
    "2026-11-23T10:60:00Z",
    "2026-11-23T10:00:60Z",
    "1969-12-31T23:59:59.9999999Z",
    "1970-01-01T00:30:00+01:00", // before the epoch once in UTC
    "9999-12-31T23:30:00-01:00", // past year 9999 once in UTC
    "+02026-11-23T10:00:00Z",
    "２０２６-11-23T10:00:00Z", // full-width digits
    "2026-11-23T10:00:00.１Z",
    "yesterday",
  ])("rejects %j", (value) => {
    expect(canonicalTimestamp(value)).toBeUndefined();
  });

  it("reads a zone-less timestamp as UTC whatever the process's time zone", () => {
    const previous = process.env.TZ;
    try {
      for (const zone of ["Asia/Kolkata", "America/Los_Angeles", "Pacific/Chatham", "UTC"]) {
        process.env.TZ = zone;
        for (const [value, utc] of [
          ["2026-07-01T12:34:56.7891234", Date.UTC(2026, 6, 1, 12, 34, 56, 789)],
          ["2026-01-15T00:00:00", Date.UTC(2026, 0, 15)],
        ] as const) {
          expect(canonicalTimestamp(value)).toEqual({ key: `${value}${value.includes(".") ? "" : ".0000000"}Z`, ms: utc });
        }
      }
      // The check above means something: in such a zone Date.parse reads the same text differently.
      process.env.TZ = "Asia/Kolkata";
      expect(Date.parse("2026-01-15T00:00:00")).toBe(Date.UTC(2026, 0, 15) - 5.5 * 3_600_000);
    } finally {
      if (previous === undefined) delete process.env.TZ;
      else process.env.TZ = previous;
    }
  });

  it("reads a zone-less timestamp as UTC in a process started in Asia/Kolkata", () => {
    // Compile the module on its own and run it in a fresh Node whose zone is set from the start.
    const dir = mkdtempSync(join(tmpdir(), "timestamps-"));
    try {
      const compiled = ts.transpileModule(readFileSync(SOURCE, "utf8"), {
        compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022 },
      });
      writeFileSync(join(dir, "timestamps.cjs"), compiled.outputText);
      const script = `
        const { canonicalTimestamp } = require(${JSON.stringify(join(dir, "timestamps.cjs"))});
        const value = "2026-01-15T00:00:00.25";
        console.log(JSON.stringify({ offset: new Date(2026, 0, 15).getTimezoneOffset(), local: Date.parse(value), canonical: canonicalTimestamp(value) }));
      `;
      const output = execFileSync(process.execPath, ["-e", script], { env: { ...process.env, TZ: "Asia/Kolkata" }, encoding: "utf8" });
      const result = JSON.parse(output) as { offset: number; local: number; canonical: unknown };
      expect(result.offset).toBe(-330);
      expect(result.local).toBe(Date.UTC(2026, 0, 15, 0, 0, 0, 250) - 5.5 * 3_600_000);
      expect(result.canonical).toEqual({ key: "2026-01-15T00:00:00.2500000Z", ms: Date.UTC(2026, 0, 15, 0, 0, 0, 250) });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("agrees with Date.UTC on random instants written with random offsets", () => {
    let seed = 12345;
    const random = (): number => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const pad = (n: number, width: number): string => String(n).padStart(width, "0");
    for (let n = 0; n < 2000; n++) {
      const ms = Math.floor(random() * Date.UTC(9999, 11, 31));
      const fraction = pad(Math.floor(random() * 10_000), 4); // digits 4–7 below the millisecond
      const offsetMinutes = Math.floor(random() * (23 * 60 + 59) * 2) - (23 * 60 + 59);
      const local = new Date(ms + offsetMinutes * 60_000);
      if (local.getUTCFullYear() < 1970 || local.getUTCFullYear() > 9999) continue;
      const sign = offsetMinutes < 0 ? "-" : "+";
      const abs = Math.abs(offsetMinutes);
      const zone = `${sign}${pad(Math.floor(abs / 60), 2)}${n % 2 === 0 ? ":" : ""}${pad(abs % 60, 2)}`;
      const written = `${local.toISOString().slice(0, 23)}${fraction}${zone}`;
      const expected = `${new Date(ms).toISOString().slice(0, 23)}${fraction}Z`;
      expect(canonicalTimestamp(written), written).toEqual({ key: expected, ms });
    }
  });
});
