import { describe, expect, it } from "vitest";
import { BufferPool } from "../../shared/http/bufferPool";

const MiB = 1024 * 1024;

/** The pool behind a backlog's page and NDJSON buffers: reuse, and what it may keep. */
describe("BufferPool", () => {
  it("hands a given-back buffer to the next taker of a size it holds, never to two takers at once", () => {
    const pool = new BufferPool({ unitBytes: MiB, maxFreeBytes: 8 * MiB, idleMs: 60_000 });
    const first = pool.take(3 * MiB - 5);
    expect(first.length).toBe(3 * MiB - 5);
    pool.give(first);
    pool.give(first);
    expect(pool.heldBytes).toBe(3 * MiB);
    const again = pool.take(2 * MiB);
    expect(again.length).toBe(2 * MiB);
    expect(again.buffer).toBe(first.buffer);
    const other = pool.take(2 * MiB);
    expect(other.buffer).not.toBe(first.buffer);
    expect(pool.heldBytes).toBe(0);
  });

  it("does not reuse a buffer smaller than asked for", () => {
    const pool = new BufferPool({ unitBytes: MiB, maxFreeBytes: 8 * MiB, idleMs: 60_000 });
    const small = pool.take(MiB);
    pool.give(small);
    expect(pool.take(MiB + 1).buffer).not.toBe(small.buffer);
    expect(pool.take(MiB).buffer).toBe(small.buffer);
  });

  it("keeps no more than its bound, and nothing that it did not hand out", () => {
    const pool = new BufferPool({ unitBytes: MiB, maxFreeBytes: 3 * MiB, idleMs: 60_000 });
    const taken = [pool.take(MiB), pool.take(MiB), pool.take(2 * MiB)];
    for (const buffer of taken) pool.give(buffer);
    expect(pool.heldBytes).toBe(2 * MiB);
    pool.give(Buffer.alloc(100));
    expect(pool.heldBytes).toBe(2 * MiB);
  });

  it("lets go of what it holds once unused for its idle time", async () => {
    const pool = new BufferPool({ unitBytes: MiB, maxFreeBytes: 8 * MiB, idleMs: 50 });
    pool.give(pool.take(MiB));
    expect(pool.heldBytes).toBe(MiB);
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(pool.heldBytes).toBe(0);
    // Used again after that, it keeps buffers again.
    pool.give(pool.take(MiB));
    expect(pool.heldBytes).toBe(MiB);
  });
});
