/**
 * Large buffers handed back and reused. A backlog moves each page's bytes through a few
 * multi-megabyte buffers (the response assembled, the NDJSON uploaded); allocated anew for every
 * page they are external memory that V8 counts toward its next full GC, which then ran about
 * twice as often as the heap alone needed. A buffer is given back only once nothing can still
 * read or write it (the caller's promise), so a reused buffer never changes bytes in flight.
 *
 * Sizes are powers of two times `minBytes`, so that a page's response and the slightly larger
 * NDJSON made from it fit the same buffer: one pool shared by the HTTP client and the blob sink
 * then holds one buffer per page in flight, not one of each. The unused tail of a buffer costs
 * address space only (its pages are never touched).
 *
 * What is kept is bounded (`maxFreeBytes`) and dropped after `idleMs` without use, so an instance
 * that pulled one backlog does not keep its buffers for the rest of its life.
 */
export class BufferPool {
  private free: Buffer[] = [];
  private freeBytes = 0;
  private readonly idle: NodeJS.Timeout;

  constructor(
    private readonly options: {
      /** The smallest buffer allocated; larger ones are this times a power of two. */
      minBytes: number;
      maxFreeBytes: number;
      idleMs: number;
    },
  ) {
    this.idle = setTimeout(() => this.drop(), options.idleMs);
    this.idle.unref();
  }

  /** `bytes` bytes, from the smallest kept buffer at least that large, else a new one. Contents are stale. */
  take(bytes: number): Buffer {
    this.idle.refresh();
    let best = -1;
    for (let i = 0; i < this.free.length; i++) {
      const length = (this.free[i] as Buffer).length;
      if (length >= bytes && (best < 0 || length < (this.free[best] as Buffer).length)) best = i;
    }
    if (best < 0) return Buffer.allocUnsafe(this.sizeFor(bytes)).subarray(0, bytes);
    const [buffer] = this.free.splice(best, 1) as [Buffer];
    this.freeBytes -= buffer.length;
    return buffer.subarray(0, bytes);
  }

  /** Hands back a buffer from take(); the caller must not touch it (or a view of it) again. */
  give(taken: Buffer): void {
    const whole = Buffer.from(taken.buffer, taken.byteOffset, taken.buffer.byteLength - taken.byteOffset);
    if (whole.length !== this.sizeFor(whole.length) || this.freeBytes + whole.length > this.options.maxFreeBytes) return;
    // Given twice, it would later go to two takers at once.
    if (this.free.some((buffer) => buffer.buffer === whole.buffer)) return;
    this.idle.refresh();
    this.free.push(whole);
    this.freeBytes += whole.length;
  }

  /** Bytes held for reuse. */
  get heldBytes(): number {
    return this.freeBytes;
  }

  /** The size class of a request: `minBytes` times the smallest power of two that holds it. */
  private sizeFor(bytes: number): number {
    let size = this.options.minBytes;
    while (size < bytes) size *= 2;
    return size;
  }

  private drop(): void {
    this.free = [];
    this.freeBytes = 0;
  }
}

/** Bodies from this size on are pooled (an alert page or its NDJSON, not a token answer). */
export const POOLED_MIN_BYTES = 1024 * 1024;

/** The pool an HTTP client and a blob sink share unless given one: up to 64 MiB kept, for a minute. */
export function largeBufferPool(): BufferPool {
  return new BufferPool({ minBytes: POOLED_MIN_BYTES, maxFreeBytes: 64 * 1024 * 1024, idleMs: 60_000 });
}
