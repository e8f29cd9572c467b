/**
 * The pull state's dedupe spill blobs (shared/pull/dedupeSpill.ts) and the set's encoding in
 * table properties (shared/pull/deliveredVersions.ts), for what their Stryker run (issue 15) left
 * open: the spill store's own failure message, each of its calls given up with its signal when
 * storage holds the answer back, and decoding rows that older versions or damage left behind.
 */
import { AnonymousCredential, ContainerClient } from "@azure/storage-blob";
import { describe, expect, it } from "vitest";
import { blobDedupeSpill } from "../../shared/pull/dedupeSpill";
import { decodeDelivered } from "../../shared/pull/deliveredVersions";
import { timeoutSignal } from "../../shared/time/timeoutSignal";
import { blobListing, scriptedStorage } from "../harness/scriptedStorage";

const TENANT = "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d";
const NAME = `${TENANT}/w-1.versions`;

describe("dedupe spill: a container that cannot be created", () => {
  it("says so with the status storage answered", async () => {
    const storage = await scriptedStorage(() => ({ status: 400 }));
    try {
      await expect(blobDedupeSpill(storage.container).write(TENANT, NAME, "h:1;", timeoutSignal(5_000))).rejects.toThrow(
        new Error("Creating the pull-state container failed (HTTP 400)"),
      );
      expect(storage.requests.map((r) => r.method)).toEqual(["PUT"]);
    } finally {
      await storage.close();
    }
  });

  it("says none when storage did not answer at all", async () => {
    // Port 9 (discard) is closed on loopback; one try, so the refusal comes at once.
    const unreachable = new ContainerClient("http://127.0.0.1:9/devstoreaccount1/spill", new AnonymousCredential(), { retryOptions: { maxTries: 1 } });
    await expect(blobDedupeSpill(unreachable).write(TENANT, NAME, "h:1;", timeoutSignal(5_000))).rejects.toThrow(
      new Error("Creating the pull-state container failed (HTTP none)"),
    );
  });
});

describe("dedupe spill: every call is given up with its signal", () => {
  /** A blob endpoint that creates the container and lists one spill blob at once, and holds everything else back 8 s. */
  async function holding() {
    const quick = (method: string, url: string) => (method === "PUT" && url.includes("restype=container") && !url.includes("comp=")) || url.includes("comp=list");
    return scriptedStorage(
      (req) => (req.url?.includes("comp=list") ? blobListing([NAME], 4) : req.method === "PUT" && req.url?.includes("restype=container") ? { status: 201 } : { status: req.method === "DELETE" ? 202 : 201 }),
      (req) => (quick(req.method ?? "", req.url ?? "") ? 0 : 8_000),
    );
  }

  async function givenUp(call: (spill: ReturnType<typeof blobDedupeSpill>, signal: AbortSignal) => Promise<unknown>, asked: (line: string) => boolean) {
    const storage = await holding();
    try {
      const started = Date.now();
      const outcome = await call(blobDedupeSpill(storage.container), timeoutSignal(300)).then(
        () => "resolved",
        (error: unknown) => (error instanceof Error ? error.name : String(error)),
      );
      expect(outcome).toMatch(/Abort|Timeout/);
      expect(Date.now() - started).toBeLessThan(4_000);
      // The call that was held is the one given up.
      expect(storage.requests.some((r) => asked(r.line))).toBe(true);
    } finally {
      await storage.close();
    }
  }

  it("the upload of a spill", () => givenUp((spill, signal) => spill.write(TENANT, NAME, "h:1;", signal), (line) => line.startsWith("PUT ") && line.includes(".versions")));

  it("the removal of one spill", () => givenUp((spill, signal) => spill.remove(NAME, signal), (line) => line.startsWith("DELETE ")));

  it("the check that the container exists before removing a tenant's spills", () =>
    givenUp((spill, signal) => spill.removeAll(TENANT, signal), (line) => line.startsWith("GET ") && line.includes("restype=container") && !line.includes("comp=list")));
});

describe("dedupe spill: removing a tenant's spills once the container is known", () => {
  it("gives up the deletion of a listed spill with its signal", async () => {
    const storage = await scriptedStorage(
      (req) => (req.url?.includes("comp=list") ? blobListing([NAME], 4) : { status: req.method === "DELETE" ? 202 : 200 }),
      (req) => (req.method === "DELETE" ? 8_000 : 0),
    );
    try {
      const started = Date.now();
      await expect(blobDedupeSpill(storage.container).removeAll(TENANT, timeoutSignal(300))).rejects.toThrow();
      expect(Date.now() - started).toBeLessThan(4_000);
      expect(storage.requests.map((r) => r.method)).toEqual(["GET", "GET", "DELETE"]);
      expect(storage.requests[1]?.query).toContain(`prefix=${encodeURIComponent(`${TENANT}/`)}`);
    } finally {
      await storage.close();
    }
  });
});

describe("delivered versions: decoding a row", () => {
  it("reads a row that holds only the first property, as rows written before the extra ones do", () => {
    expect([...decodeDelivered({ delivered: "a1:k;b2:l;" })]).toEqual([
      ["a1", 20],
      ["b2", 21],
    ]);
  });

  it("skips an empty entry at the start of a property and reads the one after it", () => {
    expect([...decodeDelivered({ delivered: ";a1:k;", delivered3: "b2:l" })]).toEqual([
      ["a1", 20],
      ["b2", 21],
    ]);
  });
});
