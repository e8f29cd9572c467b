import { hash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { scanPage } from "../../shared/defender/pageScanner";
import { canonicalTimestamp } from "../../shared/time/timestamps";
import { decryptToken, encryptToken } from "../../shared/pull/tokenCipher";
import { isoMs, nextWindow, rawHash, versionHash } from "../../shared/pull/window";

const now = Date.UTC(2026, 10, 23, 12, 0, 0);
const at = (iso: string): number => Date.parse(iso);
const base = { now, skewMs: undefined, overlapMs: 600_000, settleMs: 60_000, firstRunLookbackMs: 86_400_000 };

describe("nextWindow", () => {
  it("looks back the first-run period, and ends a settle delay before now, in epoch ms", () => {
    expect(nextWindow({ ...base, watermark: undefined })).toEqual({
      from: at("2026-11-22T12:00:00.000Z"),
      to: at("2026-11-23T11:59:00.000Z"),
    });
  });

  it("reopens the overlap before the watermark, whatever the look-back", () => {
    expect(nextWindow({ ...base, watermark: "2026-11-23T11:50:00.000Z", firstRunLookbackMs: 1 })).toEqual({
      from: at("2026-11-23T11:40:00.000Z"),
      to: at("2026-11-23T11:59:00.000Z"),
    });
    // A watermark older than the look-back is honoured as it is: nothing between them is skipped.
    expect(nextWindow({ ...base, watermark: "2026-11-20T00:00:00.000Z" })?.from).toBe(at("2026-11-19T23:50:00.000Z"));
  });

  it("reads a watermark with sub-millisecond digits or an offset as the instant it names", () => {
    expect(nextWindow({ ...base, watermark: "2026-11-23T11:50:00.1234567Z", overlapMs: 0 })?.from).toBe(at("2026-11-23T11:50:00.123Z"));
    expect(nextWindow({ ...base, watermark: "2026-11-23T12:50:00.000+01:00", overlapMs: 0 })?.from).toBe(at("2026-11-23T11:50:00.000Z"));
  });

  it("treats an unreadable watermark as a first run", () => {
    expect(nextWindow({ ...base, watermark: "not a time" })).toEqual(nextWindow({ ...base, watermark: undefined }));
  });

  it("ends the settle delay before now: a longer settle ends the window earlier", () => {
    const short = nextWindow({ ...base, watermark: "2026-11-23T11:00:00.000Z", settleMs: 0 });
    const long = nextWindow({ ...base, watermark: "2026-11-23T11:00:00.000Z", settleMs: 300_000 });
    expect(short?.to).toBe(now);
    expect(long?.to).toBe(now - 300_000);
    expect(long?.from).toBe(short?.from);
  });

  it("ends the window earlier by the skew when the host clock runs ahead of the API's", () => {
    // skewMs = apiDate - hostClock: negative when the host is ahead.
    const window = nextWindow({ ...base, watermark: "2026-11-23T11:00:00.000Z", skewMs: -45_000 });
    expect(window).toEqual({ from: at("2026-11-23T10:50:00.000Z"), to: at("2026-11-23T11:58:15.000Z") });
    expect(window?.to).toBe(now - 45_000 - 60_000);
  });

  it("never ends the window later when the host runs behind the API, or when the skew is unknown", () => {
    const plain = nextWindow({ ...base, watermark: "2026-11-23T11:00:00.000Z", skewMs: 0 });
    expect(plain?.to).toBe(at("2026-11-23T11:59:00.000Z"));
    expect(nextWindow({ ...base, watermark: "2026-11-23T11:00:00.000Z", skewMs: 120_000 })).toEqual(plain);
    expect(nextWindow({ ...base, watermark: "2026-11-23T11:00:00.000Z", skewMs: undefined })).toEqual(plain);
  });

  it("has nothing to read when the window would be empty", () => {
    expect(nextWindow({ ...base, watermark: "2026-11-23T12:00:00.000Z", overlapMs: 0 })).toBeUndefined();
    // Exactly empty: to === from.
    expect(nextWindow({ ...base, watermark: "2026-11-23T11:59:00.000Z", overlapMs: 0 })).toBeUndefined();
    // One millisecond is something to read.
    expect(nextWindow({ ...base, watermark: "2026-11-23T11:58:59.999Z", overlapMs: 0 })).toEqual({
      from: at("2026-11-23T11:58:59.999Z"),
      to: at("2026-11-23T11:59:00.000Z"),
    });
    // A host far enough ahead of the API has nothing settled to read yet.
    expect(nextWindow({ ...base, watermark: "2026-11-23T11:58:00.000Z", overlapMs: 0, skewMs: -60_000 })).toBeUndefined();
  });

  it("isoMs writes epoch ms back as the canonical Z form", () => {
    expect(isoMs(at("2026-11-23T11:58:15.000Z"))).toBe("2026-11-23T11:58:15.000Z");
  });
});

describe("alert versions", () => {
  const key = (value: string): string => {
    const canonical = canonicalTimestamp(value);
    if (!canonical) throw new Error(`not a timestamp: ${value}`);
    return canonical.key;
  };

  it("differ when the same alert is updated, and between alerts", () => {
    const a = versionHash({ id: "da1", updatedAtKey: key("2026-11-23T10:00:00.1234567Z") });
    expect(versionHash({ id: "da1", updatedAtKey: key("2026-11-23T10:00:00.1234567Z") })).toBe(a);
    expect(versionHash({ id: "da1", updatedAtKey: key("2026-11-23T10:00:00.1234568Z") })).not.toBe(a);
    expect(versionHash({ id: "da2", updatedAtKey: key("2026-11-23T10:00:00.1234567Z") })).not.toBe(a);
    expect(a).toMatch(/^[A-Za-z0-9_-]{16}$/);
  });

  it("are one version for one instant written as Z or +00:00 when callers pass the canonical key", () => {
    const zulu = "2026-11-23T10:00:00.5Z";
    const offset = "2026-11-23T10:00:00.5000000+00:00";
    const shifted = "2026-11-23T11:00:00.5+01:00";
    expect(versionHash({ id: "da1", updatedAtKey: key(offset) })).toBe(versionHash({ id: "da1", updatedAtKey: key(zulu) }));
    expect(versionHash({ id: "da1", updatedAtKey: key(shifted) })).toBe(versionHash({ id: "da1", updatedAtKey: key(zulu) }));
    // versionHash does not canonicalise: the raw spellings are two different inputs.
    expect(versionHash({ id: "da1", updatedAtKey: offset })).not.toBe(versionHash({ id: "da1", updatedAtKey: zulu }));
  });

  it("hashes exactly the id and the key it is given, and nothing else of the alert", () => {
    const expected = hash("sha256", "da1\n2026-11-23T10:00:00.5000000Z", "base64url").slice(0, 16);
    expect(versionHash({ id: "da1", updatedAtKey: "2026-11-23T10:00:00.5000000Z" })).toBe(expected);
    const extra = { id: "da1", updatedAtKey: "2026-11-23T10:00:00.5000000Z", lastUpdateTime: "something else", json: "{}" };
    expect(versionHash(extra)).toBe(expected);
  });

  it("stand for an element no alert could be read from by a hash of its raw text, never equal to an alert's", () => {
    // The census of a crowded millisecond counts such elements too: each by its text.
    const raw = '{"id":42,"lastUpdateTime":"not a time"}';
    expect(rawHash(raw)).toBe(`raw:${hash("sha256", raw, "base64url").slice(0, 16)}`);
    expect(rawHash(raw)).toMatch(/^raw:[A-Za-z0-9_-]{16}$/);
    expect(rawHash(`${raw} `)).not.toBe(rawHash(raw));
    expect(rawHash("da1\n2026-11-23T10:00:00.5000000Z")).not.toBe(versionHash({ id: "da1", updatedAtKey: "2026-11-23T10:00:00.5000000Z" }));
  });

  it("match for alerts the scanner read with different spellings of one instant", () => {
    const page = scanPage(
      '{"value":[{"id":"da1","lastUpdateTime":"2026-11-23T10:00:00.5Z"},{"id":"da1","lastUpdateTime":"2026-11-23T10:00:00.500+00:00"},{"id":"da1","lastUpdateTime":"2026-11-23T10:00:00.6Z"}]}',
    );
    const [z, plus, later] = page.alerts.map(versionHash);
    expect(z).toBe(plus);
    expect(later).not.toBe(z);
  });
});

describe("access-token cache cipher", () => {
  const cipherKey = Buffer.alloc(32, 7).toString("base64");
  it("round-trips and refuses another tenant or key", () => {
    const sealed = encryptToken(cipherKey, "tenant-a", "eyJ0b2tlbg");
    expect(sealed).not.toContain("eyJ0b2tlbg");
    expect(decryptToken(cipherKey, "tenant-a", sealed)).toBe("eyJ0b2tlbg");
    expect(decryptToken(cipherKey, "tenant-b", sealed)).toBeUndefined();
    expect(decryptToken(Buffer.alloc(32, 8).toString("base64"), "tenant-a", sealed)).toBeUndefined();
  });
});
