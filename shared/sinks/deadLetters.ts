import { createHash } from "node:crypto";
import type { ContainerClient } from "@azure/storage-blob";
import { statusOf } from "../errors";
import { boundedSignal, type CallOptions } from "./alertSink";
import { containerCreator } from "./containers";
import type { AlertSourceKind } from "../sources/alertSources";
import { timeoutSignal } from "../time/timeoutSignal";

/** Why data went to the dead-letter store instead of a sink. */
export type DeadLetterReason =
  | "invalid_json"
  | "not_an_object"
  | "missing_id"
  | "missing_time"
  | "invalid_time"
  | "invalid_page"
  /** A page larger than any page of its size may be, refused unread even at one millisecond (raw says so; nothing kept). */
  | "page_too_large"
  /** The page pointed its `@odata.nextLink` at another host: never followed, kept for the operator. */
  | "foreign_next_link"
  /** A nextLink the API had already given in the same pass (a loop): kept as a report, not followed again. */
  | "next_link_loop"
  /** A sink refused the version as larger than it can ever take (see `sink`). */
  | "oversized"
  /** A sink refused the version as invalid, every time it was sent (see `sink`). */
  | "rejected";

/** One thing the pipeline could not accept, kept raw with where it came from. */
export interface DeadLetter {
  tenantId: string;
  source: AlertSourceKind;
  reason: DeadLetterReason;
  /** The window being read and the page inside it, so the span can be read again. */
  window: { from: string; to: string };
  page: { from: string; to: string; skip: number };
  /** The alert's (or the whole page's) text exactly as received. */
  raw: string;
  at: string;
  /** For a refusal by one sink: which (the other sinks have the version). */
  sink?: string;
}

/** What the operator API lists about a dead letter: where and why, never its content. */
export interface DeadLetterInfo {
  name: string;
  reason: string;
  pageFrom: string;
  pageTo: string;
  skip: number;
  sizeBytes: number;
  storedAt: string | null;
}

export class DeadLetterError extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = "DeadLetterError";
  }
}

export interface DeadLetterStore {
  /** Stores the letter durably; resolves true when it is new, false when the same letter was already there. */
  write(letter: DeadLetter, options?: CallOptions): Promise<boolean>;
  list(tenantId: string): Promise<DeadLetterInfo[]>;
  read(name: string): Promise<DeadLetter | undefined>;
  remove(name: string): Promise<void>;
}

const SAFE_TENANT = /^[A-Za-z0-9][A-Za-z0-9-]{0,63}$/;

/**
 * Dead letters as JSON blobs, `{tenantId}/{reason}_{hash}.json`, the hash over the reason and the
 * raw text only: the same poison alert read again (in the next cycle's overlap, or in the left
 * part of a split page, under other page bounds) has the same name, and uploads refuse to
 * overwrite, so it is stored and counted once. Where it was read is in the body and in the blob's
 * metadata, which the listing reads without downloading any content.
 */
export class BlobDeadLetterStore implements DeadLetterStore {
  private readonly ensureContainer: () => Promise<void>;

  constructor(
    private readonly container: ContainerClient,
    private readonly timeoutMs = 60_000,
  ) {
    this.ensureContainer = containerCreator(container, (error) => failure("Creating the dead-letter container failed", error), timeoutMs);
  }

  static nameFor(letter: Pick<DeadLetter, "tenantId" | "reason" | "raw" | "sink">): string {
    if (!SAFE_TENANT.test(letter.tenantId)) throw new DeadLetterError("The dead letter's tenant id is not a valid tenant id");
    const hash = createHash("sha256").update(letter.reason).update("\n");
    // The same version refused by two sinks is two letters: each sink's copy is missing.
    if (letter.sink) hash.update(letter.sink).update("\n");
    const digest = hash.update(letter.raw).digest("hex").slice(0, 16);
    return `${letter.tenantId}/${letter.reason}_${digest}.json`;
  }

  async write(letter: DeadLetter, options?: CallOptions): Promise<boolean> {
    await this.ensureContainer();
    // Stryker disable next-line StringLiteral: an empty encoding name is utf8
    const body = Buffer.from(JSON.stringify(letter), "utf8");
    try {
      await this.container.getBlockBlobClient(BlobDeadLetterStore.nameFor(letter)).upload(body, body.length, {
        blobHTTPHeaders: { blobContentType: "application/json" },
        metadata: {
          reason: letter.reason,
          pagefrom: letter.page.from,
          pageto: letter.page.to,
          skip: String(letter.page.skip),
          ...(letter.sink ? { sink: letter.sink } : {}),
        },
        conditions: { ifNoneMatch: "*" },
        abortSignal: boundedSignal(this.timeoutMs, options),
      });
      return true;
    } catch (error) {
      if (statusOf(error) === 409) return false;
      throw failure("Storing a dead letter failed", error);
    }
  }

  async list(tenantId: string): Promise<DeadLetterInfo[]> {
    if (!SAFE_TENANT.test(tenantId)) return [];
    const letters: DeadLetterInfo[] = [];
    try {
      const abortSignal = timeoutSignal(this.timeoutMs);
      if (!(await this.container.exists({ abortSignal }))) return [];
      for await (const blob of this.container.listBlobsFlat({ prefix: `${tenantId}/`, includeMetadata: true, abortSignal })) {
        const meta = blob.metadata ?? {};
        const file = blob.name.slice(blob.name.lastIndexOf("/") + 1);
        letters.push({
          name: blob.name,
          reason: meta["reason"] ?? file.slice(0, file.lastIndexOf("_")),
          pageFrom: meta["pagefrom"] ?? "",
          pageTo: meta["pageto"] ?? "",
          skip: Number(meta["skip"] ?? 0),
          sizeBytes: blob.properties.contentLength ?? 0,
          storedAt: blob.properties.createdOn?.toISOString() ?? null,
        });
      }
    } catch (error) {
      throw failure("Listing dead letters failed", error);
    }
    return letters;
  }

  async read(name: string): Promise<DeadLetter | undefined> {
    try {
      const buffer = await this.container.getBlobClient(name).downloadToBuffer(0, undefined, { abortSignal: timeoutSignal(this.timeoutMs) });
      return JSON.parse(buffer.toString("utf8")) as DeadLetter;
    } catch (error) {
      if (statusOf(error) === 404) return undefined;
      throw failure("Reading a dead letter failed", error);
    }
  }

  async remove(name: string): Promise<void> {
    try {
      await this.container.getBlobClient(name).deleteIfExists({ abortSignal: timeoutSignal(this.timeoutMs) });
    } catch (error) {
      throw failure("Removing a dead letter failed", error);
    }
  }
}

function failure(what: string, error: unknown): DeadLetterError {
  const status = statusOf(error);
  return new DeadLetterError(status === undefined ? `${what} (no HTTP response)` : `${what} (HTTP ${status})`, status);
}
