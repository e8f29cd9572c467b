/**
 * Whether the passes over one crowded millisecond have read all of it. A pass cannot see what it
 * missed when the API's order shifts between its pages (Graph may answer every request in a new
 * order; offset paging over it repeats some alerts and skips as many). But each whole pass counts
 * what the millisecond holds: when whole passes in a row count the same, the distinct versions
 * read by the second of them and those after either reach that count (all read) or fall short
 * (some are known to be missing, whatever a quiet pass suggests). The first pass of such a run
 * only sets the count: an alert it read may have left the millisecond before it ended (updated
 * by an analyst or automation), and would then stand in for one never read (review H20).
 */
export type InstantVerdict = "complete" | "incomplete" | "unknown";

/**
 * Versions a pass or the union remembers at most (about 80 bytes each; both together, and a
 * union just merged, stay under about 12 MB): a millisecond larger than this is judged by quiet
 * passes alone.
 */
const MAX_CENSUS = 50_000;

export class InstantCensus {
  private union = new Set<string>();
  private pass = new Set<string>();
  private passCount = 0;
  private passWhole = false;
  private lastCount: number | undefined;
  private sameCountPasses = 0;

  /** A pass that does not start at the millisecond's first page (a resumed one) counts nothing. */
  startPass(whole: boolean): void {
    this.pass = new Set();
    this.passCount = 0;
    this.passWhole = whole;
  }

  /** A version read, or a rejected element (it takes a place in the API's paging like any alert). */
  saw(versionHash: string): void {
    this.passCount++;
    if (this.pass.size < MAX_CENSUS) this.pass.add(versionHash);
    else this.passWhole = false;
  }

  /** The pass did not reach the millisecond's end (a page limit, a page that could not be read). */
  cutShort(): void {
    this.passWhole = false;
  }

  endPass(): InstantVerdict {
    if (!this.passWhole) {
      this.lastCount = undefined;
      this.sameCountPasses = 0;
      this.union = new Set();
      return "unknown";
    }
    if (this.passCount === this.lastCount && this.union.size <= MAX_CENSUS) {
      for (const hash of this.pass) this.union.add(hash);
      this.sameCountPasses++;
    } else {
      this.union = new Set();
      this.sameCountPasses = 1;
    }
    this.lastCount = this.passCount;
    this.pass = new Set();
    return this.verdict;
  }

  get verdict(): InstantVerdict {
    if (this.sameCountPasses < 2 || this.lastCount === undefined || this.union.size > MAX_CENSUS) return "unknown";
    if (this.union.size === this.lastCount) return "complete";
    // More distinct versions than the count: the millisecond's contents changed, not just its order.
    return this.union.size < this.lastCount ? "incomplete" : "unknown";
  }

  /** For a warning: what the API counted and how many of those were read. */
  get shortfall(): { counted: number; read: number } | undefined {
    return this.verdict === "incomplete" && this.lastCount !== undefined ? { counted: this.lastCount, read: this.union.size } : undefined;
  }
}
