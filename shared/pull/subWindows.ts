/** A half-open span `[from, to)` of version times, in epoch ms. */
export interface SubWindow {
  from: number;
  to: number;
}

/**
 * How full a sub-window is aimed to be at first, and again after a page came back full: room for
 * the density estimate to be off before a page fills (a full page costs a second read).
 */
const TARGET_FILL = 0.8;
/**
 * While reads keep coming back as the density said, the aim moves towards a page less this many
 * standard deviations of a sub-window's count, the noise no estimate removes. For alerts that
 * arrive at random (a count's variance is the count) that is 97.5 % of a 10,000-alert page and
 * 92.4 % of a 1,000-alert one, and a steady backlog costs about 1.07 requests per page instead of
 * 1.26, which is what the API's hourly quota is spent on. Alerts that come in clusters, or at a
 * rate that keeps rising, vary more: the variance observed (`dispersion`) widens the margin.
 */
const NOISE_MARGIN_SD = 2.5;
/** How much weight the newest read gets in the running dispersion. */
const DISPERSION_WEIGHT = 0.3;
/** How much weight the newest sub-window's density gets in the running estimate. */
const DENSITY_WEIGHT = 0.5;
/** An empty sub-window: the next one may be this many times longer (quiet stretches are crossed fast). */
const EMPTY_GROWTH = 8;

/**
 * Plans the sub-windows a window is read in, left to right, so that correctness never depends
 * on the API's order: each sub-window is read with one request and counts as read only when
 * its page came back short. A full page says "more than this"; its sub-window is cut where the
 * page's own alerts say the middle is (or in half), the left part is read again and the rest is
 * planned afresh, down to a single millisecond (which the caller then pages with `$skip` and
 * verifies). An alert updated while the window is read moves to a later time and so into a
 * later sub-window or window: nothing can shift out from under a page.
 *
 * Sizes come from the density seen so far (alerts per ms), aiming at `TARGET_FILL` of a page at
 * first and fuller while reads fill as planned (see NOISE_MARGIN_SD).
 * The plan may have gaps (the rest of a split sub-window); they are planned when reached, with
 * the density known by then.
 */
export class SubWindowPlanner {
  private readonly plan: SubWindow[] = [];
  private windowTo: number;
  private done: number;
  private estimate: number | undefined;
  /** False between a split and the next completed sub-window: the density is a guess then. */
  private settled = true;
  /** The last split sized its left part by the page's density; this is where the median cut would have been. */
  private probe: { median: number } | undefined;
  /** A page's density proved wrong for what lay before it: median cuts until a sub-window reads well filled again. */
  private densityMisled = false;
  /** Alerts a sub-window is sized to hold: from TARGET_FILL of a page up to `fillCeiling()`. */
  private fill: number;
  /**
   * How much more than random arrival the counts of reads planned from the density vary: the
   * running mean of (count − aim)² / aim, which is 1 for alerts that arrive at random.
   */
  private dispersion = 1;
  /**
   * The span of the last full page not in time order, from its earliest to its latest alert, and
   * how dense it was: reads planned before it stop at its start rather than run into it at a
   * quieter stretch's density (an alert storm cost several full reads each), and reads inside it
   * are sized for its density at least.
   */
  private crowd: { from: number; to: number; density: number } | undefined;
  /** Reads in a row that came back short yet at least half as full as aimed. */
  private filledAsPlanned = 0;

  constructor(
    window: { from: number; to: number },
    progress: { position: number; nextEnd: number; density?: number },
    private readonly pageSize: number,
  ) {
    this.fill = TARGET_FILL * pageSize;
    this.windowTo = window.to;
    this.done = Math.max(window.from, progress.position);
    this.estimate = progress.density;
    if (this.done < this.windowTo) this.plan.push({ from: this.done, to: clamp(progress.nextEnd, this.done + 1, this.windowTo) });
  }

  /** Start of the first sub-window not yet read completely. */
  get position(): number {
    return this.done;
  }

  get to(): number {
    return this.windowTo;
  }

  get density(): number | undefined {
    return this.estimate;
  }

  /** True once every sub-window up to the window's end has been read. */
  get finished(): boolean {
    return this.done >= this.windowTo;
  }

  /**
   * The next `count` sub-windows in reading order. Gaps are planned by the density, except
   * right after a split, when only the head is planned (a read-ahead sized on a guess would be
   * wasted).
   */
  upcoming(count: number): SubWindow[] {
    const result: SubWindow[] = [];
    let cursor = this.done;
    for (let i = 0; result.length < count && cursor < this.windowTo; i++) {
      let item = this.plan[i];
      if (!item || item.from !== cursor) {
        if (!this.settled && result.length > 0) break;
        const gapEnd = item ? item.from : this.windowTo;
        item = { from: cursor, to: cursor + Math.min(this.gapSpan(cursor), gapEnd - cursor) };
        this.plan.splice(i, 0, item);
      }
      result.push(item);
      cursor = item.to;
    }
    return result;
  }

  head(): SubWindow | undefined {
    return this.upcoming(1)[0];
  }

  /** End of the sub-window read next, as a resume must read it again. */
  nextEnd(): number {
    return this.head()?.to ?? this.windowTo;
  }

  /**
   * The head came back full: keep reading its left part only. `times` are the version times the
   * full page held, in the order the API sent them. A single millisecond cannot be split.
   */
  split(times: readonly number[] = []): boolean {
    const head = this.plan[0];
    if (!head || head.to - head.from < 2) return false;
    // A head planned from the density that came back full overshot its aim by at least this much.
    if (this.settled && this.estimate !== undefined) this.observe(this.pageSize);
    const cut = cutPoint(head, times);
    // A full page proves at least this density; sizing on less would overfill the next pages too.
    this.estimate = Math.max(this.estimate ?? 0, cut.density ?? 0, this.pageSize / (head.to - head.from));
    // A page not in time order is a sample whose spread still gives the density where it lies:
    // newest first (Graph), it is exactly that of the sub-window's newest alerts, and a left part
    // sized by it reads short at once instead of coming back full and being halved again.
    this.fill = TARGET_FILL * this.pageSize;
    this.filledAsPlanned = 0;
    // Once a page's density has misled, a page not in time order is cut no later than the head's
    // middle: the median of a newest-first page lies within its last page of alerts, and cutting
    // there peeled one page a read off the end of a window whose density rises (322 reads for
    // 100,000 alerts where halving needs about 120).
    const median = cut.sample ? Math.min(cut.at, Math.max(head.from + 1, head.from + Math.floor((head.to - head.from) / 2))) : cut.at;
    const at = cut.sample && cut.density !== undefined && !this.densityMisled ? clamp(head.from + Math.floor(this.fill / cut.density), head.from + 1, cut.at) : median;
    // If that part comes back nearly empty, the page was a burst (a bulk update in a few ms) that
    // says nothing of the hours before it: the median cut is the one to make then (see complete).
    this.probe = at < cut.at ? { median: cut.at } : undefined;
    this.crowd = cut.sample && cut.density !== undefined && cut.span !== undefined ? { from: cut.span.from, to: cut.span.to, density: cut.density } : undefined;
    this.plan.splice(0, 1, { from: head.from, to: at });
    this.settled = false;
    return true;
  }

  /**
   * The head was read completely and held `count` alerts at `times`; a `count` of undefined for
   * a single crowded millisecond, whose count says nothing about the time around it.
   */
  complete(count: number | undefined, times: readonly number[] = []): void {
    const head = this.plan.shift();
    if (!head) return;
    const plannedByDensity = this.settled && this.estimate !== undefined;
    this.done = head.to;
    if (this.crowd && this.done >= this.crowd.to) this.crowd = undefined;
    this.settled = true;
    const probe = this.probe;
    this.probe = undefined;
    const sparse = (count ?? 0) < (TARGET_FILL * this.pageSize) / 4;
    // The window may have been clipped since the probe was taken: never plan past its end.
    const median = probe ? Math.min(probe.median, this.windowTo) : this.done;
    if (sparse && median > this.done) {
      // Far sparser than the page's density said: read up to the median cut next instead, and
      // cut at medians until a sub-window reads well filled again (alerts packed at one end of
      // a long stretch would otherwise send every split on the same empty probe).
      this.plan.unshift({ from: this.done, to: median });
      this.settled = false;
      this.densityMisled = true;
    } else if (!sparse) {
      this.densityMisled = false;
    }
    if (count === undefined) return;
    // Short, yet filled as planned twice in a row: the estimate holds here, so the aim can come
    // closer to a page (after one such read alone, alerts that come in spikes overflowed more).
    if (count >= this.fill / 2) {
      if (plannedByDensity) this.observe(count);
      if (++this.filledAsPlanned >= 2) this.fill += (this.fillCeiling() - this.fill) / 2;
    } else {
      this.filledAsPlanned = 0;
    }
    const spread = spreadOf(times);
    if (count >= 2 && spread !== undefined) {
      // Alerts cluster: the density where they are, not averaged over empty hours, sizes the next read.
      const observed = count / Math.max(1, (spread * count) / (count - 1));
      const previous = this.estimate;
      this.estimate = previous !== undefined && observed < 2 * previous && previous < 2 * observed ? DENSITY_WEIGHT * observed + (1 - DENSITY_WEIGHT) * previous : observed;
      return;
    }
    if (count === 0) {
      this.estimate = this.estimate === undefined ? 0 : this.estimate / EMPTY_GROWTH;
      return;
    }
    const observed = count / (head.to - head.from);
    this.estimate = this.estimate === undefined ? observed : DENSITY_WEIGHT * observed + (1 - DENSITY_WEIGHT) * this.estimate;
  }

  /**
   * Moves the window's end earlier (the service's clock is behind ours). Sub-windows past it are
   * dropped; one that straddles it is cut. Never before what is already read.
   */
  clip(to: number): void {
    this.windowTo = Math.max(this.done, Math.min(this.windowTo, to));
    for (let i = this.plan.length - 1; i >= 0; i--) {
      const sub = this.plan[i] as SubWindow;
      if (sub.from >= this.windowTo) this.plan.splice(i, 1);
      else if (sub.to > this.windowTo) sub.to = this.windowTo;
    }
  }

  /** Counts a read planned for `fill` alerts that held `count` into the dispersion. */
  private observe(count: number): void {
    this.dispersion = DISPERSION_WEIGHT * ((count - this.fill) ** 2 / this.fill) + (1 - DISPERSION_WEIGHT) * this.dispersion;
  }

  /**
   * The count λ with λ + NOISE_MARGIN_SD·√(dispersion·λ) = pageSize: the fullest aim that the
   * counts' observed noise (never taken as less than random arrival's) seldom overflows, and
   * never under TARGET_FILL of a page.
   */
  private fillCeiling(): number {
    const spread = NOISE_MARGIN_SD * Math.sqrt(Math.max(1, this.dispersion));
    const root = (-spread + Math.sqrt(spread * spread + 4 * this.pageSize)) / 2;
    return Math.max(TARGET_FILL * this.pageSize, root * root);
  }

  private span(density = this.estimate): number {
    if (density === undefined || density <= 0) return Number.POSITIVE_INFINITY;
    return Math.max(1, Math.floor(this.fill / density));
  }

  /** How long a sub-window planned to start at `from` is. */
  private gapSpan(from: number): number {
    const crowd = this.crowd;
    if (!crowd || from >= crowd.to) return this.span();
    if (from < crowd.from) return Math.min(this.span(), crowd.from - from);
    return this.span(Math.max(this.estimate ?? 0, crowd.density));
  }
}


/**
 * Where to cut a full sub-window. When the page came in time order (as the service usually
 * answers) it holds the sub-window's earliest alerts, so the left part up to its last time is
 * what it covered: that part will read short, and the density of the page sizes what follows.
 * In any other order the page is a sample: cut at its median time, so both parts hold some of
 * it, and size what follows by its spread. Alerts all at the first millisecond: cut right after
 * it, so it is read on its own.
 */
function cutPoint(head: SubWindow, times: readonly number[]): { at: number; density?: number; sample?: boolean; span?: SubWindow } {
  const inside = times.filter((t) => t >= head.from && t < head.to);
  const ascending = inside.every((t, i) => i === 0 || t >= (inside[i - 1] as number));
  const first = inside[0];
  const last = inside[inside.length - 1];
  if (ascending && first !== undefined && last !== undefined && last > head.from) {
    return { at: last, density: inside.length / Math.max(1, last - first) };
  }
  const sorted = [...inside].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)];
  if (median === undefined) return { at: head.from + Math.floor((head.to - head.from) / 2) };
  // The page's own spread still says how dense the alerts are at least (exactly so when the API
  // answers newest first, as Graph does): the parts after the cut are sized by it instead of
  // being found full and cut again.
  const spread = (sorted[sorted.length - 1] as number) - (sorted[0] as number);
  return { at: median > head.from ? median : head.from + 1, sample: true, span: { from: sorted[0] as number, to: (sorted[sorted.length - 1] as number) + 1 }, ...(sorted.length >= 2 ? { density: sorted.length / Math.max(1, spread) } : {}) };
}

function spreadOf(times: readonly number[]): number | undefined {
  if (times.length < 2) return undefined;
  let min = Number.POSITIVE_INFINITY;
  let max = Number.NEGATIVE_INFINITY;
  for (const t of times) {
    if (t < min) min = t;
    if (t > max) max = t;
  }
  return max - min;
}

function clamp(value: number, min: number, max: number): number {
  return Math.max(min, Math.min(max, value));
}
