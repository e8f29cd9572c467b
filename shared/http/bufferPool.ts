/**
 * Large buffers handed back and reused. A backlog moves each page's bytes through a few
 * multi-megabyte buffers (the response assembled, the NDJSON uploaded); allocated anew for every
 * page they are external memory that V8 counts toward its next full GC, which then ran about
 * twice as often as the heap alone needed. A buffer is given back only once nothing can still
 * read or write it (the caller's promise), so a reused buffer never changes bytes in flight.
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
      /** A buffer is allocated in a multiple of this many bytes, so near sizes share buffers. */
      unitBytes: number;
      maxFreeBytes: number;
      idleMs: number;
    },
  ) {
    this.idle = setTimeout(() => this.drop(), options.idleMs);
    this.idle.unref();
  }

  /** `bytes` bytes, from a kept buffer at least that large, else a new one. Contents are stale. */
  take(bytes: number): Buffer {
    this.idle.refresh();
    const index = this.free.findIndex((buffer) => buffer.length >= bytes);
    if (index < 0) return Buffer.allocUnsafe(Math.ceil(bytes / this.options.unitBytes) * this.options.unitBytes).subarray(0, bytes);
    const [buffer] = this.free.splice(index, 1) as [Buffer];
    this.freeBytes -= buffer.length;
    return buffer.subarray(0, bytes);
  }

  /** Hands back a buffer from take(); the caller must not touch it (or a view of it) again. */
  give(taken: Buffer): void {
    const whole = Buffer.from(taken.buffer, taken.byteOffset, taken.buffer.byteLength - taken.byteOffset);
    if (whole.length % this.options.unitBytes !== 0 || this.freeBytes + whole.length > this.options.maxFreeBytes) return;
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

  private drop(): void {
    this.free = [];
    this.freeBytes = 0;
  }
}
