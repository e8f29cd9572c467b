import { describe, expect, it } from "vitest";
import { BufferPool } from "../../shared/http/bufferPool";

const MiB = 1024 * 1024;
const pool = (maxFreeBytes = 64 * MiB, idleMs = 60_000) => new BufferPool({ minBytes: MiB, maxFreeBytes, idleMs });

/** The pool behind a backlog's page and NDJSON buffers: reuse, and what it may keep. */
describe("BufferPool", () => {
  it("hands a given-back buffer to the next taker of a size it holds, never to two takers at once", () => {
    const buffers = pool();
    const first = buffers.take(3 * MiB - 5);
    expect(first.length).toBe(3 * MiB - 5);
    buffers.give(first);
    buffers.give(first);
    // Sizes are powers of two times the smallest: 3 MiB - 5 bytes takes a 4 MiB buffer.
    expect(buffers.heldBytes).toBe(4 * MiB);
    const again = buffers.take(2 * MiB);
    expect(again.length).toBe(2 * MiB);
    expect(again.buffer).toBe(first.buffer);
    const other = buffers.take(2 * MiB);
    expect(other.buffer).not.toBe(first.buffer);
    expect(buffers.heldBytes).toBe(0);
  });

  it("serves a page's response and its slightly larger NDJSON from one buffer", () => {
    const buffers = pool();
    // A 10,000-alert page (~27 MB) and its NDJSON (the envelopes add ~1.5 MB): one 32 MiB class.
    const response = buffers.take(27_000_000);
    buffers.give(response);
    const ndjson = buffers.take(28_500_000);
    expect(ndjson.buffer).toBe(response.buffer);
    buffers.give(ndjson);
    expect(buffers.heldBytes).toBe(32 * MiB);
  });

  it("does not reuse a buffer smaller than asked for, and picks the smallest that fits", () => {
    const buffers = pool();
    const small = buffers.take(MiB);
    const large = buffers.take(8 * MiB);
    buffers.give(large);
    buffers.give(small);
    expect(buffers.take(MiB + 1).buffer).toBe(large.buffer);
    buffers.give(large);
    expect(buffers.take(MiB).buffer).toBe(small.buffer);
    expect(buffers.take(MiB).buffer).toBe(large.buffer);
  });

  it("keeps no more than its bound, and nothing that it did not hand out", () => {
    const buffers = pool(3 * MiB);
    const taken = [buffers.take(MiB), buffers.take(MiB), buffers.take(2 * MiB)];
    for (const buffer of taken) buffers.give(buffer);
    expect(buffers.heldBytes).toBe(2 * MiB);
    const roomy = pool();
    roomy.give(Buffer.alloc(100));
    // Not a size it allocates (3 MiB is no power of two times 1 MiB): not one of its own.
    roomy.give(Buffer.allocUnsafe(3 * MiB));
    expect(roomy.heldBytes).toBe(0);
    roomy.give(Buffer.allocUnsafe(2 * MiB));
    expect(roomy.heldBytes).toBe(2 * MiB);
  });

  it("lets go of what it holds once unused for its idle time", async () => {
    const buffers = pool(8 * MiB, 50);
    buffers.give(buffers.take(MiB));
    expect(buffers.heldBytes).toBe(MiB);
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(buffers.heldBytes).toBe(0);
    // Used again after that, it keeps buffers again.
    buffers.give(buffers.take(MiB));
    expect(buffers.heldBytes).toBe(MiB);
  });
});
