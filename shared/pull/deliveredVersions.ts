import { CompactVersionSet } from "./compactVersionSet";

/** Version hash → the version's lastUpdateTime in epoch seconds (kept for pruning). */
export type DeliveredVersions = Map<string, number>;

// A Table string property holds 32K UTF-16 characters; each entry is ~24 of them.
const MAX_CHARS_PER_PROPERTY = 30_000;
// 15 properties × 60 KB stays under the 1 MiB entity limit with room for the rest.
const EXTRA_PROPERTIES = 14;

function encodeEntries(delivered: DeliveredVersions): string[] {
  const chunks: string[] = [];
  let current = "";
  for (const [hash, at] of delivered) {
    const entry = `${hash}:${at.toString(36)};`;
    if (current.length + entry.length > MAX_CHARS_PER_PROPERTY) {
      chunks.push(current);
      current = "";
    }
    current += entry;
  }
  if (current) chunks.push(current);
  return chunks;
}

/**
 * The set as entity properties (`delivered`, `delivered1` … `delivered14`), or undefined when it
 * does not fit in one entity; the caller then spills it whole. With `unbounded` the whole set
 * comes back in `delivered`, for the spill blob.
 */
export function encodeDelivered(delivered: DeliveredVersions, options: { unbounded?: boolean } = {}): Record<string, string> | undefined {
  const chunks = encodeEntries(delivered);
  if (options.unbounded) return { delivered: chunks.join("") };
  if (chunks.length > EXTRA_PROPERTIES + 1) return undefined;
  const properties: Record<string, string> = { delivered: chunks[0] ?? "" };
  for (let i = 1; i <= EXTRA_PROPERTIES; i++) properties[`delivered${i}`] = chunks[i] ?? "";
  return properties;
}

export function decodeDelivered(source: Record<string, unknown>): DeliveredVersions {
  const delivered: DeliveredVersions = new CompactVersionSet();
  for (let i = 0; i <= EXTRA_PROPERTIES; i++) {
    const chunk = source[i === 0 ? "delivered" : `delivered${i}`];
    if (typeof chunk !== "string" || !chunk) continue;
    let start = 0;
    while (start < chunk.length) {
      let end = chunk.indexOf(";", start);
      if (end < 0) end = chunk.length;
      const sep = chunk.indexOf(":", start);
      if (sep > start && sep < end) delivered.set(chunk.slice(start, sep), parseInt(chunk.slice(sep + 1, end), 36));
      start = end + 1;
    }
  }
  return delivered;
}
