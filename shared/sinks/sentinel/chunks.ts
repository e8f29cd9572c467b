import type { PreparedRecord } from "./records";

/**
 * Bytes of one upload call's JSON body (array brackets and commas included). The service takes 1 MB
 * per call, compressed or not; the SDK splits at 1,000,000 bytes summed over the elements alone,
 * so a chunk it builds can come out a few hundred bytes over a strict 1,000,000 once the commas
 * are added. Chunks this size are never split again by the SDK, and gzip only makes them smaller.
 */
export const CALL_BUDGET_BYTES = 900_000;

/**
 * Groups records, in order, into calls of at most `budget` bytes of JSON. A record is never
 * larger than the budget: `prepareRecords` keeps every field under 60 KB, and a record has twelve.
 */
export function chunkRecords(records: readonly PreparedRecord[], budget = CALL_BUDGET_BYTES): PreparedRecord[][] {
  const chunks: PreparedRecord[][] = [];
  let current: PreparedRecord[] = [];
  let size = 2; // "[" and "]"
  for (const record of records) {
    const added = record.bytes + (current.length > 0 ? 1 : 0);
    if (current.length > 0 && size + added > budget) {
      chunks.push(current);
      current = [];
      size = 2;
    }
    size += record.bytes + (current.length > 0 ? 1 : 0);
    current.push(record);
  }
  if (current.length > 0) chunks.push(current);
  return chunks;
}
