/**
 * Pulls running in this process. The host runs up to `batchSize + newBatchThreshold` queue
 * messages at once (host.json: 16 + 8); a message that names a group of tenants must not multiply
 * that, or a burst of alerts in every quiet tenant at once would run eight times as many pulls,
 * and hold their pages in memory, as the instance is sized for.
 */
export const PULL_SLOTS = 24;

export type ReleaseSlot = () => void;

export class PullSlots {
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(readonly capacity: number = PULL_SLOTS) {}

  /** Pulls holding a slot now. */
  get inUse(): number {
    return this.running;
  }

  /** A slot whatever the count: a single-tenant message is already counted by the host's own limit. */
  take(): ReleaseSlot {
    this.running++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.running--;
      this.grant();
    };
  }

  /** A slot within `waitMs`, or undefined when none came free in time. */
  acquire(waitMs: number): Promise<ReleaseSlot | undefined> {
    if (this.running < this.capacity && this.waiting.length === 0) return Promise.resolve(this.take());
    return new Promise((resolve) => {
      const granted = (): void => {
        clearTimeout(timer);
        resolve(this.take());
      };
      const timer = setTimeout(() => {
        const at = this.waiting.indexOf(granted);
        if (at >= 0) this.waiting.splice(at, 1);
        resolve(undefined);
      }, waitMs);
      this.waiting.push(granted);
    });
  }

  private grant(): void {
    while (this.running < this.capacity) {
      const next = this.waiting.shift();
      if (!next) return;
      next();
    }
  }
}
