import { describe, expect, it } from "vitest";
import { decryptToken, encryptToken } from "../../shared/pull/tokenCipher";
import { nextWindow, versionHash } from "../../shared/pull/window";

const now = Date.UTC(2026, 10, 23, 12, 0, 0);

describe("nextWindow", () => {
  it("looks back the first-run period, and ends a settle delay before now", () => {
    expect(nextWindow({ watermark: undefined, now, overlapMs: 600_000, settleMs: 60_000, firstRunLookbackMs: 86_400_000 })).toEqual({
      from: "2026-11-22T12:00:00.000Z",
      to: "2026-11-23T11:59:00.000Z",
    });
  });

  it("reopens the overlap before the checkpoint", () => {
    expect(nextWindow({ watermark: "2026-11-23T11:50:00.000Z", now, overlapMs: 600_000, settleMs: 60_000, firstRunLookbackMs: 1 })).toEqual({
      from: "2026-11-23T11:40:00.000Z",
      to: "2026-11-23T11:59:00.000Z",
    });
  });

  it("has nothing to read when the window would be empty", () => {
    expect(nextWindow({ watermark: "2026-11-23T12:00:00.000Z", now, overlapMs: 0, settleMs: 60_000, firstRunLookbackMs: 1 })).toBeUndefined();
  });
});

describe("alert versions", () => {
  it("differ when the same alert is updated", () => {
    const a = versionHash({ id: "da1", lastUpdateTime: "2026-11-23T10:00:00.1234567Z" });
    expect(versionHash({ id: "da1", lastUpdateTime: "2026-11-23T10:00:00.1234567Z" })).toBe(a);
    expect(versionHash({ id: "da1", lastUpdateTime: "2026-11-23T10:00:00.1234568Z" })).not.toBe(a);
  });
});

describe("access-token cache cipher", () => {
  const key = Buffer.alloc(32, 7).toString("base64");
  it("round-trips and refuses another tenant or key", () => {
    const sealed = encryptToken(key, "tenant-a", "eyJ0b2tlbg");
    expect(sealed).not.toContain("eyJ0b2tlbg");
    expect(decryptToken(key, "tenant-a", sealed)).toBe("eyJ0b2tlbg");
    expect(decryptToken(key, "tenant-b", sealed)).toBeUndefined();
    expect(decryptToken(Buffer.alloc(32, 8).toString("base64"), "tenant-a", sealed)).toBeUndefined();
  });
});
