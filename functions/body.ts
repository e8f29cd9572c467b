import type { HttpRequest } from "@azure/functions";

/**
 * A request body as text, or undefined when it is larger than `maxBytes`: refused by its
 * Content-Length before anything is read, or as soon as the bytes read pass the limit, so a
 * 30 MiB body is never decoded (or held) to learn that it is too large.
 */
export async function readBodyText(request: HttpRequest, maxBytes: number): Promise<string | undefined> {
  const declared = Number(request.headers.get("content-length"));
  if (Number.isFinite(declared) && declared > maxBytes) return undefined;
  const body = request.body;
  if (!body) return "";
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel();
      return undefined;
    }
    chunks.push(value);
  }
  return new TextDecoder().decode(Buffer.concat(chunks, size));
}
