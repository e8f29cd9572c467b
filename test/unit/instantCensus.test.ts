import { describe, expect, it } from "vitest";
import { InstantCensus, type InstantVerdict } from "../../shared/pull/instantCensus";

/** One whole pass that read these versions (repeats included, as offset paging over a moving order gives them). */
function pass(census: InstantCensus, versions: readonly string[], whole = true): InstantVerdict {
  census.startPass(whole);
  for (const version of versions) census.saw(version);
  return census.endPass();
}

const range = (from: number, to: number): string[] => Array.from({ length: to - from }, (_, i) => `v${from + i}`);

describe("InstantCensus: whether the passes over a crowded millisecond read all of it", () => {
  it("needs two passes that count the same: one pass proves nothing, however clean", () => {
    const census = new InstantCensus();
    expect(pass(census, range(0, 1250))).toBe("unknown");
    expect(census.verdict).toBe("unknown");
    expect(pass(census, range(0, 1250))).toBe("complete");
  });

  it("knows versions are missing while the passes agree on a count their distinct versions fall short of, until they reach it", () => {
    const census = new InstantCensus();
    // 1,000 + 250 of a 1,250 millisecond whose order moved between the pages: 250 repeated, 250 unread.
    expect(pass(census, [...range(0, 1000), ...range(750, 1000)])).toBe("unknown");
    expect(pass(census, [...range(0, 1000), ...range(0, 250)])).toBe("incomplete");
    expect(census.shortfall).toEqual({ counted: 1250, read: 1000 });
    expect(pass(census, [...range(250, 1250), ...range(300, 550)])).toBe("complete");
    expect(census.shortfall).toBeUndefined();
  });

  it("starts over when the count changes, so a version that left the millisecond does not stand in for one never read", () => {
    const census = new InstantCensus();
    pass(census, range(0, 10));
    pass(census, range(0, 10));
    expect(census.verdict).toBe("complete");
    // v9 was updated (it left); v10 arrived late; v11 arrived late and was missed.
    expect(pass(census, [...range(0, 9), "v10", "v10"])).toBe("unknown");
    expect(pass(census, [...range(0, 9), "v10", "v10"])).toBe("incomplete");
    expect(census.shortfall).toEqual({ counted: 11, read: 10 });
    expect(pass(census, [...range(0, 9), "v10", "v11"])).toBe("complete");
  });

  it("does not let an alert read by the first pass of a run, that then left the millisecond, stand in for one never read (review H20)", () => {
    const census = new InstantCensus();
    // v9 is read on the first page, then updated away: the second page, offset over the nine
    // left, skips v8. The pass counts 9, as every pass after it will.
    expect(pass(census, ["v9", "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7"])).toBe("unknown");
    // The next pass reads the nine that are there but, in a new order, misses v8 and repeats v7.
    expect(pass(census, [...range(0, 8), "v7"])).toBe("incomplete");
    expect(census.shortfall).toEqual({ counted: 9, read: 8 });
    expect(pass(census, range(0, 9))).toBe("complete");
  });

  it("counts a rejected element like an alert: it takes a place in the paging", () => {
    const census = new InstantCensus();
    // Five alerts and one element that could not be read, twice in a stable order: all of it.
    pass(census, [...range(0, 5), "raw:x"]);
    expect(pass(census, [...range(0, 5), "raw:x"])).toBe("complete");
  });

  it("cannot judge when the distinct versions outnumber the count: the contents changed, not just the order", () => {
    const census = new InstantCensus();
    pass(census, range(0, 10));
    expect(pass(census, [...range(0, 9), "v0"])).toBe("incomplete");
    // v0 left and v10 arrived between passes: ten counted still, eleven seen.
    expect(pass(census, range(1, 11))).toBe("unknown");
    expect(census.shortfall).toBeUndefined();
  });

  it("counts nothing from a pass that was resumed part-way or cut short, and forgets what came before it", () => {
    const census = new InstantCensus();
    pass(census, range(0, 10));
    expect(pass(census, range(0, 10), false)).toBe("unknown");
    expect(pass(census, range(0, 10))).toBe("unknown");
    expect(pass(census, range(0, 10))).toBe("complete");

    census.startPass(true);
    for (const version of range(0, 10)) census.saw(version);
    census.cutShort();
    expect(census.endPass()).toBe("unknown");
    expect(census.verdict).toBe("unknown");
    expect(pass(census, range(0, 10))).toBe("unknown");
  });

  it("gives up counting past 50,000 versions in a pass rather than holding them all", () => {
    const census = new InstantCensus();
    const big = range(0, 50_001);
    expect(pass(census, big)).toBe("unknown");
    expect(pass(census, big)).toBe("unknown");
    const fits = range(0, 50_000);
    pass(census, fits);
    expect(pass(census, fits)).toBe("complete");
  });
});

describe("InstantCensus at its memory limit (50,000 versions a pass or union)", () => {
  const MAX = 50_000;

  it("judges a pass that saw more than the limit as not whole, though its extra sightings were repeats", () => {
    const census = new InstantCensus();
    // 50,001 sightings, 50,000 distinct: the pass cannot tell the last one from a new version.
    const versions = [...range(0, MAX), "v0"];
    expect(pass(census, versions)).toBe("unknown");
    expect(pass(census, versions)).toBe("unknown");
    expect(census.shortfall).toBeUndefined();
  });

  it("keeps merging passes into a union of exactly the limit", () => {
    const census = new InstantCensus();
    const all = range(0, MAX);
    expect(pass(census, all)).toBe("unknown");
    expect(pass(census, all)).toBe("complete");
    // The union now holds the limit: a third agreeing pass still counts.
    expect(pass(census, all)).toBe("complete");
  });

  it("starts again from an empty union once the union outgrew the limit, and can then conclude", () => {
    const census = new InstantCensus();
    const first = range(0, MAX);
    const other = range(MAX, 2 * MAX);
    pass(census, first);
    expect(pass(census, first)).toBe("complete");
    // The same count with other contents: the union (100,000) outgrows the limit.
    expect(pass(census, other)).toBe("unknown");
    // Too large to merge: forgotten, this pass only starts a new run of agreeing counts...
    expect(pass(census, first)).toBe("unknown");
    // ...which the next agreeing pass completes.
    expect(pass(census, first)).toBe("complete");
  });

  it("says nothing of a union over the limit even when it falls short of the count", () => {
    const census = new InstantCensus();
    // 60,000 sightings a pass, 40,000 distinct (each pass repeats half of what it read).
    const withRepeats = (from: number) => [...range(from, from + 40_000), ...range(from, from + 20_000)];
    pass(census, withRepeats(0));
    expect(pass(census, withRepeats(0))).toBe("incomplete");
    // 15,000 more distinct: a union of 55,000 against a count of 60,000, but over the limit.
    expect(pass(census, withRepeats(15_000))).toBe("unknown");
    expect(census.shortfall).toBeUndefined();
  });

  it("counts nothing for a pass that was never started", () => {
    const census = new InstantCensus();
    expect(census.endPass()).toBe("unknown");
    // Had the unstarted pass counted as a whole one of 0 versions, this empty pass would agree with it.
    expect(pass(census, [])).toBe("unknown");
  });
});

