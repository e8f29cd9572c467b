import { randomUUID } from "node:crypto";
import { isAlertSource, type AlertSourceKind } from "../sources/alertSources";
import { odata, type TableClient } from "@azure/data-tables";
import { TABLES } from "../storage/names";
import type { Clock } from "../clock";
import { statusOf } from "../errors";
import { isConcurrencyConflict, type TableFactory } from "../state/tables";
import { boundedSignal, type CallOptions } from "../sinks/alertSink";
import type { SinkProgress, SinkProgressMap } from "../sinks/sinkSet";
import { CompactVersionSet } from "./compactVersionSet";
import { decodeDelivered, encodeDelivered, type DeliveredVersions } from "./deliveredVersions";
import { timeoutSignal } from "../time/timeoutSignal";
import { WrittenRows } from "./writtenRows";

export type { DeliveredVersions } from "./deliveredVersions";

/** Changes a state a pull opens before its first write; `stored`: false for a tenant never pulled (a blank state). */
export type PrepareState = (state: PullState, stored: boolean) => void;

/** A window being read sub-window by sub-window; see SubWindowPlanner. */
export interface WindowProgress {
  from: string;
  to: string;
  /** Everything in [from, position) has been delivered and acknowledged. */
  position: string;
  /** End of the sub-window read next: a resume re-reads exactly [position, nextEnd). */
  nextEnd: string;
  /** Alerts per millisecond seen so far in this window (sizes the next sub-windows). */
  density?: number;
  /** Paging inside the single millisecond at `position` (see the pull's readInstant). */
  instant?: InstantProgress;
  /**
   * False while the window's end has not been checked against the API's clock (its `Date`): a
   * window stored when its pull began, before its first page. A run that resumes it checks it
   * first. Absent: checked (every window earlier versions stored was).
   */
  settled?: boolean;
}

/** How far the pull got through one millisecond that holds more than a page. */
export interface InstantProgress {
  /** 0 for the first read, then each verifying re-read. */
  pass: number;
  /** `$skip` of the next page of this pass. */
  skip: number;
  /** This pass has delivered a version no earlier pass had: another pass must follow. */
  foundNew: boolean;
}

/** A span whose page never parsed: the pull holds there for a few runs before giving it up. */
export interface InvalidSpan {
  from: string;
  to: string;
  /** Runs that met it so far. */
  runs: number;
}

/**
 * Per-tenant pull state in Table Storage: checkpoint, the in-progress window, the versions
 * already delivered near the checkpoint, the pull lease, the encrypted access-token cache and
 * health. One entity per tenant so that one ETag guards all of it.
 */
export interface PullState {
  /** The source this state's checkpoint, window and dedupe set belong to (absent on older rows: "mde"). */
  source?: AlertSourceKind;
  /** Every alert with lastUpdateTime below this was delivered (the end of the last finished window). */
  watermark?: string;
  window?: WindowProgress;
  /** Versions delivered that a later read may serve again (inside the overlap or ahead of the position). */
  delivered: DeliveredVersions;
  accessTokenCipher?: string;
  accessTokenExpiresAt?: number;
  refreshTokenObtainedAt?: number;
  apiCalls: number[];
  lastRunAt?: string;
  lastSuccessAt?: string;
  lastAlertCount?: number;
  consecutiveFailures: number;
  lastErrorCode?: string;
  lastErrorMessage?: string;
  /** The API's clock minus ours, as last measured from its `Date` header (ms). */
  clockSkewMs?: number;
  invalidSpan?: InvalidSpan;
  /** Each sink's own progress, when the app delivers to several (see SinkSet). */
  sinks?: SinkProgressMap;
  deadLetters: number;
  lastDeadLetterReason?: string;
  lastDeadLetterAt?: string;
  /** The latest condition worth an operator's attention that did not fail the pull. */
  lastWarningCode?: string;
  lastWarningMessage?: string;
  lastWarningAt?: string;
}

/** Events recorded outside a held lease, kept apart so recording them never breaks a lease. */
export interface PullIncidents {
  leaseLost: number;
  lastLeaseLostAt?: string;
  releaseFailed: number;
  lastReleaseFailedAt?: string;
}

/** Where a dedupe set too large for the entity goes (a blob in Azure). */
export interface DedupeSpillStore {
  write(tenantId: string, name: string, body: string, signal: AbortSignal): Promise<void>;
  read(name: string, signal: AbortSignal): Promise<string | undefined>;
  remove(name: string, signal: AbortSignal): Promise<void>;
  removeAll(tenantId: string, signal: AbortSignal): Promise<void>;
}

type Entity = Record<string, unknown> & { partitionKey: string; rowKey: string };

/**
 * Each tenant's pull state is the row `pull` of a partition of its own (the tenant id), so the
 * fleet's pulls are not held to one partition's ~2,000 operations a second. Earlier versions kept
 * every tenant in the partition `pull` (row key: the tenant id); such a row is read until the
 * tenant's first write moves it (see PullStateStore.write).
 */
const ROW = "pull";
const LEGACY_PARTITION = "pull";
/** Marks a legacy row whose state moved: its lease keeps a still-running older version out for a while. */
const MOVED_OWNER = "moved";
const MOVED_LEASE_MS = 3600_000;
const pullKey = (tenantId: string): { partitionKey: string; rowKey: string } => ({ partitionKey: tenantId, rowKey: ROW });
/** What pull health reads of the entity (readAll). */
const HEALTH_COLUMNS = [
  "PartitionKey",
  "RowKey",
  "watermark",
  "windowFrom",
  "windowTo",
  "windowPosition",
  "windowNextEnd",
  "windowDensity",
  "refreshTokenObtainedAt",
  "lastRunAt",
  "lastSuccessAt",
  "lastAlertCount",
  "consecutiveFailures",
  "lastErrorCode",
  "lastErrorMessage",
  "clockSkewMs",
  "deadLetters",
  "lastDeadLetterReason",
  "lastDeadLetterAt",
  "lastWarningCode",
  "lastWarningMessage",
  "lastWarningAt",
  "sinkProgress",
] as const;
const INCIDENT_PARTITION = "incident";

const str = (value: unknown): string | undefined => (typeof value === "string" && value !== "" ? value : undefined);
const num = (value: unknown): number | undefined => (typeof value === "number" && Number.isFinite(value) ? value : undefined);

function windowOf(entity: Entity): WindowProgress | undefined {
  const from = str(entity["windowFrom"]);
  const to = str(entity["windowTo"]);
  if (!from || !to) return undefined;
  // A window saved by the $skip-paging version of this app has no position: read it again
  // from its start; the persisted versions keep that from delivering anything twice.
  const position = str(entity["windowPosition"]) ?? from;
  const window: WindowProgress = { from, to, position, nextEnd: str(entity["windowNextEnd"]) ?? to };
  const density = num(entity["windowDensity"]);
  if (density !== undefined && density > 0) window.density = density;
  if (entity["windowSettled"] === false) window.settled = false;
  const pass = num(entity["windowInstantPass"]);
  const skip = num(entity["windowInstantSkip"]);
  if (pass !== undefined && pass >= 0 && skip !== undefined && skip >= 0) {
    window.instant = { pass, skip, foundNew: entity["windowInstantFoundNew"] === true };
  }
  return window;
}

/** The per-sink progress column: a small JSON object, read defensively (a bad value means no progress yet). */
function sinkProgressOf(entity: Entity): SinkProgressMap | undefined {
  const text = str(entity["sinkProgress"]);
  if (!text) return undefined;
  try {
    const parsed = JSON.parse(text) as Record<string, Partial<SinkProgress>>;
    const map: SinkProgressMap = {};
    for (const [name, entry] of Object.entries(parsed)) {
      const from = num(entry.parkedFrom);
      const to = num(entry.parkedTo);
      if (from === undefined || to === undefined || from < 0 || to < from) continue;
      map[name] = { ...entry, parkedFrom: from, parkedTo: to };
    }
    return map;
  } catch {
    return undefined;
  }
}

function invalidSpanOf(entity: Entity): InvalidSpan | undefined {
  const from = str(entity["invalidSpanFrom"]);
  const to = str(entity["invalidSpanTo"]);
  const runs = num(entity["invalidSpanRuns"]);
  return from && to && runs !== undefined ? { from, to, runs } : undefined;
}

function fromEntity(entity: Entity, delivered: DeliveredVersions): PullState {
  const state: PullState = {
    delivered,
    apiCalls: str(entity["apiCalls"])?.split(",").map(Number).filter(Number.isFinite) ?? [],
    consecutiveFailures: num(entity["consecutiveFailures"]) ?? 0,
    deadLetters: num(entity["deadLetters"]) ?? 0,
  };
  const window = windowOf(entity);
  if (window) state.window = window;
  const invalid = invalidSpanOf(entity);
  if (invalid) state.invalidSpan = invalid;
  const sinks = sinkProgressOf(entity);
  if (sinks) state.sinks = sinks;
  const source = str(entity["source"]);
  if (isAlertSource(source)) state.source = source;
  for (const key of [
    "watermark",
    "accessTokenCipher",
    "lastRunAt",
    "lastSuccessAt",
    "lastErrorCode",
    "lastErrorMessage",
    "lastDeadLetterReason",
    "lastDeadLetterAt",
    "lastWarningCode",
    "lastWarningMessage",
    "lastWarningAt",
  ] as const) {
    const value = str(entity[key]);
    if (value !== undefined) state[key] = value;
  }
  for (const key of ["accessTokenExpiresAt", "refreshTokenObtainedAt"] as const) {
    const value = num(entity[key]);
    if (value) state[key] = value;
  }
  const count = num(entity["lastAlertCount"]);
  if (count !== undefined) state.lastAlertCount = count;
  const skew = Number(str(entity["clockSkewMs"]) ?? Number.NaN);
  if (Number.isFinite(skew)) state.clockSkewMs = skew;
  return state;
}

function toEntity(tenantId: string, state: PullState, lease: { owner: string; until: number }, extra: Record<string, unknown>): Entity {
  return {
    ...pullKey(tenantId),
    source: state.source ?? "",
    watermark: state.watermark ?? "",
    windowFrom: state.window?.from ?? "",
    windowTo: state.window?.to ?? "",
    windowPosition: state.window?.position ?? "",
    windowNextEnd: state.window?.nextEnd ?? "",
    windowDensity: state.window?.density ?? 0,
    windowInstantPass: state.window?.instant?.pass ?? -1,
    windowInstantSkip: state.window?.instant?.skip ?? -1,
    windowInstantFoundNew: state.window?.instant?.foundNew ?? false,
    windowSettled: state.window?.settled !== false,
    invalidSpanFrom: state.invalidSpan?.from ?? "",
    invalidSpanTo: state.invalidSpan?.to ?? "",
    invalidSpanRuns: state.invalidSpan?.runs ?? 0,
    sinkProgress: state.sinks ? JSON.stringify(state.sinks) : "",
    accessTokenCipher: state.accessTokenCipher ?? "",
    accessTokenExpiresAt: state.accessTokenExpiresAt ?? 0,
    refreshTokenObtainedAt: state.refreshTokenObtainedAt ?? 0,
    apiCalls: state.apiCalls.join(","),
    lastRunAt: state.lastRunAt ?? "",
    lastSuccessAt: state.lastSuccessAt ?? "",
    lastAlertCount: state.lastAlertCount ?? 0,
    consecutiveFailures: state.consecutiveFailures,
    lastErrorCode: state.lastErrorCode ?? "",
    lastErrorMessage: state.lastErrorMessage ?? "",
    clockSkewMs: state.clockSkewMs === undefined ? "" : String(state.clockSkewMs),
    deadLetters: state.deadLetters,
    lastDeadLetterReason: state.lastDeadLetterReason ?? "",
    lastDeadLetterAt: state.lastDeadLetterAt ?? "",
    lastWarningCode: state.lastWarningCode ?? "",
    lastWarningMessage: state.lastWarningMessage ?? "",
    lastWarningAt: state.lastWarningAt ?? "",
    leaseOwner: lease.owner,
    leaseUntil: lease.until,
    ...extra,
  };
}

/**
 * Thrown when another writer changed (or offboarding removed) the entity: this pull must stop.
 * `busy`: another pull wrote first while this one had not written at all (its lease was never
 * claimed), so this one did nothing and simply yields, as if it had found the lease held.
 */
export class LeaseLostError extends Error {
  constructor(readonly reason: "taken" | "reset" | "busy") {
    super(
      reason === "reset"
        ? "the tenant's pull state was reset"
        : reason === "busy"
          ? "another pull of the tenant wrote first"
          : "pull lease lost to another instance",
    );
    this.name = "LeaseLostError";
  }
}

/** Why a renewal still in flight is given up when the pull stops its keep-alive. */
const KEEP_ALIVE_STOPPED = new Error("the pull stopped renewing its lease");

/** Write ids a lease remembers: enough to recognise any of its own writes whose answer was lost. */
const OWN_WRITES_KEPT = 16;

/** The blob a write spills its dedupe set to: named by the write, so a lease can name it after a failure. */
function spillBlobName(tenantId: string, writeId: string): string {
  return `${tenantId}/${writeId}.versions`;
}

/**
 * A pull lease. Every save is conditioned on the ETag of the previous one (the first on the ETag
 * the state was read with), so two pulls of one tenant can never both write: the second to arrive
 * fails and stops. The lease is short; every save renews it and `keepAlive` renews it while a slow
 * call runs, so a pull that dies blocks its tenant only briefly and a live one never loses it to a
 * slow page. Saves run one at a time, in the order they were asked for.
 *
 * A lease from `open` is not yet claimed: nothing is written until the pull first needs it (its
 * first save, `claim` before anything leaves the pull, or the closing release). A quiet tenant's
 * cycle is then one read and one write; a pull that meets a rival's write before its own first
 * one did nothing and ends busy.
 */
export class PullLease {
  private released = false;
  /** Every lease starts unclaimed: its first write claims it. */
  private claimed = false;
  /**
   * Opened from the row this process wrote last instead of a read, and claimed by `open` itself
   * (it never returns such a lease unclaimed; see WrittenRows): whatever the state held then, a
   * new window among it, is already stored.
   */
  openedFromMemory = false;
  /** The dedupe set changed since it was last written (a spilled set is rewritten only then). */
  private deliveredChanged = false;
  private queue: Promise<unknown> = Promise.resolve();
  /** Set when a background renewal found the lease taken: every later save fails with it. */
  private lost: LeaseLostError | undefined;
  /** Ids of this lease's recent writes: a 412 against one of them is our own write, not a rival. */
  private readonly ownWrites: string[] = [];
  /**
   * Blobs of spilled writes that failed without a definite answer: the row may point at one of
   * them, so they are removed only once a later write is known to have replaced it.
   */
  private uncertainSpills: string[] = [];

  constructor(
    private readonly store: PullStateStore,
    readonly tenantId: string,
    readonly owner: string,
    /** The entity's ETag, or undefined when the tenant has no pull state yet (the first write creates it). */
    private etag: string | undefined,
    private until: number,
    private readonly leaseMs: number,
    private spill: string | undefined,
    public state: PullState,
    /** The ETag of a row in the legacy partition that the first write moves (see PullStateStore.write). */
    private legacyEtag?: string,
    /**
     * Runs before a write that creates the tenant's row (its first pull): an offboarding that
     * came after `open` found nothing to delete, so only this check can stop the row coming back.
     */
    private readonly beforeCreate?: () => Promise<void>,
  ) {}

  /** Epoch ms at which the lease lapses unless renewed. */
  get expiresAt(): number {
    return this.until;
  }

  /** Call after adding to or pruning `state.delivered`. */
  markDeliveredChanged(): void {
    this.deliveredChanged = true;
  }

  /** Writes the state and renews the lease. */
  save(options?: CallOptions): Promise<void> {
    return this.serialized(() => this.renew(options));
  }

  /**
   * Writes the lease unless it already is: call it before anything that must happen under a held
   * lease (a sink write, a dead letter, a refresh-token redemption).
   */
  claim(options?: CallOptions): Promise<void> {
    return this.serialized(() => (this.claimed ? Promise.resolve() : this.renew(options)));
  }

  private async renew(options?: CallOptions): Promise<void> {
    if (this.released) return;
    const until = this.store.now() + this.leaseMs;
    await this.persist({ owner: this.owner, until }, options);
    this.until = until;
  }

  release(options?: CallOptions): Promise<void> {
    return this.serialized(async () => {
      if (this.released) return;
      await this.persist({ owner: "", until: 0 }, options);
      this.released = true;
    });
  }

  /**
   * Renews the lease every `everyMs` that passes without a save, until the returned stop is
   * called: one page may legitimately take longer than the lease (retries, a slow sink). Each
   * renewal is bounded by `everyMs`, so renewals stay less than two intervals apart.
   */
  keepAlive(everyMs: number): () => Promise<void> {
    // Stopping also abandons a renewal in flight: the pull's own bounds must not wait on it.
    const stopped = new AbortController();
    const timer = setInterval(() => {
      if (this.released || this.lost || this.until - this.store.now() > this.leaseMs - everyMs) return;
      this.save({ signal: timeoutSignal(everyMs, stopped.signal) }).catch((error: unknown) => {
        if (error instanceof LeaseLostError) this.lost = error;
        // Anything else: the pull's own next save meets the same trouble and reports it.
      });
    }, everyMs);
    timer.unref();
    return async () => {
      clearInterval(timer);
      // A reason of our own: abort() without one builds a DOMException and its stack on every pull.
      stopped.abort(KEEP_ALIVE_STOPPED);
      await this.queue;
    };
  }

  private serialized(op: () => Promise<void>): Promise<void> {
    const run = this.queue.then(() => {
      if (this.lost) throw this.lost;
      return op();
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async persist(lease: { owner: string; until: number }, options?: CallOptions): Promise<void> {
    // Cleared first: versions marked while this write is under way are written by the next one.
    const changed = this.deliveredChanged;
    this.deliveredChanged = false;
    if (this.etag === undefined && this.legacyEtag === undefined) await this.beforeCreate?.();
    const writeId = randomUUID();
    this.ownWrites.push(writeId);
    if (this.ownWrites.length > OWN_WRITES_KEPT) this.ownWrites.shift();
    let written: { etag: string; spill: string | undefined };
    try {
      written = await this.store.write(this.tenantId, this.state, lease, {
        etag: this.etag,
        previousSpill: this.spill,
        ...(changed ? {} : { unchangedSpill: this.spill }),
        writeId,
        ownWrites: this.ownWrites,
        ...(this.claimed || !this.openedFromMemory ? {} : { fromMemory: true }),
        ...(this.legacyEtag === undefined ? {} : { legacyEtag: this.legacyEtag }),
        ...(options?.signal ? { signal: options.signal } : {}),
      });
    } catch (error) {
      if (changed) this.deliveredChanged = true;
      // The write may have spilled to a blob and landed, pointing the row at it (a refusal frees
      // the blob itself, and a lost lease writes no more, so this matters only after a fault).
      this.uncertainSpills.push(spillBlobName(this.tenantId, writeId));
      // Nothing of this pull was written or sent: a rival got there first, which is not a loss.
      if (!this.claimed && error instanceof LeaseLostError && error.reason === "taken") throw new LeaseLostError("busy");
      throw error;
    }
    // The row now names another blob (each write spills under its own id).
    for (const name of this.uncertainSpills) this.store.discardSpill(name);
    this.uncertainSpills = [];
    this.etag = written.etag;
    this.spill = written.spill;
    this.claimed = true;
    this.legacyEtag = undefined;
  }
}

export interface PullStateStoreOptions {
  tables: TableFactory;
  clock: Clock;
  spill: DedupeSpillStore;
  /** Every Table call is abandoned after this long, so a storage stall cannot outlive a pull. */
  timeoutMs?: number;
  /** Memory for the rows this process wrote last (see WrittenRows); 0 reads every row before a pull. */
  writtenRowsBytes?: number;
}

export class PullStateStore {
  private readonly tables: TableFactory;
  private readonly clock: Clock;
  private readonly spill: DedupeSpillStore;
  private readonly timeoutMs: number;
  private readonly written: WrittenRows;

  constructor(options: PullStateStoreOptions) {
    this.tables = options.tables;
    this.clock = options.clock;
    this.spill = options.spill;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.written = new WrittenRows(options.writtenRowsBytes);
  }

  now(): number {
    return this.clock();
  }

  private table(): Promise<TableClient> {
    return this.tables.open(TABLES.pullState);
  }

  private signal(options?: CallOptions): { abortSignal: AbortSignal } {
    return { abortSignal: boundedSignal(this.timeoutMs, options) };
  }

  private async readEntity(partitionKey: string, rowKey: string): Promise<(Entity & { etag: string }) | undefined> {
    const table = await this.table();
    try {
      return await table.getEntity<Entity>(partitionKey, rowKey, this.signal());
    } catch (error) {
      if (statusOf(error) === 404) return undefined;
      throw error;
    }
  }

  /** The tenant's pull row: its own partition's, else a legacy one not yet moved (one more read only for a tenant with neither). */
  private async readPullRow(tenantId: string): Promise<{ entity: Entity & { etag: string }; legacy: boolean } | undefined> {
    const { partitionKey, rowKey } = pullKey(tenantId);
    const entity = await this.readEntity(partitionKey, rowKey);
    if (entity) return { entity, legacy: false };
    const legacy = await this.readEntity(LEGACY_PARTITION, tenantId);
    return legacy ? { entity: legacy, legacy: true } : undefined;
  }

  /**
   * Reads the tenant's state for a pull, or returns undefined if another pull holds an unexpired
   * lease. Nothing is written: the returned lease is claimed by its first write (see PullLease).
   * `prepare` may change the state first, so what it decides (a new window) is stored by that
   * same conditional write; `stored` tells a stored state from the blank one of a tenant never pulled.
   */
  async open(
    tenantId: string,
    owner: string,
    leaseMs: number,
    prepare?: PrepareState,
    options: { beforeCreate?: () => Promise<void> } = {},
  ): Promise<PullLease | undefined> {
    const warm = await this.openWritten(tenantId, owner, leaseMs, prepare);
    if (warm) return warm;
    const row = await this.readPullRow(tenantId);
    const entity = row?.entity;
    // A moved legacy row with no row in the tenant's partition: its move stopped half-way; finish it.
    const leaseOwner = str(entity?.["leaseOwner"]);
    if (entity && leaseOwner && !(row.legacy && leaseOwner === MOVED_OWNER) && (num(entity["leaseUntil"]) ?? 0) > this.clock() && leaseOwner !== owner) {
      return undefined;
    }
    const spill = entity ? str(entity["deliveredBlob"]) : undefined;
    let delivered: DeliveredVersions;
    if (spill) {
      const body = await this.spill.read(spill, timeoutSignal(this.timeoutMs));
      // A spilled set that is gone can only mean re-delivery of the overlap, never a loss.
      delivered = decodeDelivered({ delivered: body ?? "" });
    } else {
      delivered = entity ? decodeDelivered(entity) : new CompactVersionSet();
    }
    const state = entity ? fromEntity(entity, delivered) : emptyState();
    prepare?.(state, entity !== undefined);
    const legacyEtag = row?.legacy ? entity?.etag : undefined;
    return new PullLease(this, tenantId, owner, row?.legacy ? undefined : entity?.etag, this.clock() + leaseMs, leaseMs, spill, state, legacyEtag, options.beforeCreate);
  }

  /**
   * A tenant whose row this process wrote last is claimed at once, under that write's ETag,
   * instead of read: one write replaces the read and the claim a pull that delivers would make.
   * Undefined when there is no such row, its lease was not free, or the claim was refused or
   * failed (someone else wrote the row since, or storage did not answer): the caller then reads
   * the row as usual, which also tells a held lease from a storage fault.
   */
  private async openWritten(
    tenantId: string,
    owner: string,
    leaseMs: number,
    prepare: PrepareState | undefined,
  ): Promise<PullLease | undefined> {
    const written = this.written.get(tenantId);
    if (!written) return undefined;
    const { row, etag } = written;
    // A held lease must be seen as stored now.
    if (str(row["leaseOwner"]) && (num(row["leaseUntil"]) ?? 0) > this.clock()) return undefined;
    const state = fromEntity(row as Entity, decodeDelivered(row));
    prepare?.(state, true);
    const lease = new PullLease(this, tenantId, owner, etag, this.clock() + leaseMs, leaseMs, undefined, state);
    lease.openedFromMemory = true;
    try {
      await lease.claim();
    } catch {
      // The failed write forgot the row (see write): the caller's read is what counts now.
      return undefined;
    }
    return lease;
  }

  /** `open` and claim at once: the lease is written before this returns (undefined if another pull holds or takes it). */
  async acquire(tenantId: string, owner: string, leaseMs: number, prepare?: PrepareState): Promise<PullLease | undefined> {
    const lease = await this.open(tenantId, owner, leaseMs, prepare);
    try {
      await lease?.claim();
    } catch (error) {
      if (error instanceof LeaseLostError && error.reason === "busy") return undefined;
      throw error;
    }
    return lease;
  }

  /**
   * @internal used by PullLease. A dedupe set too large for the entity is written to a new blob
   * first and the entity then points at it, so the two change together under the entity's ETag.
   */
  async write(
    tenantId: string,
    state: PullState,
    lease: { owner: string; until: number },
    at: {
      /** Undefined: the entity does not exist yet and this write creates it. */
      etag: string | undefined;
      previousSpill: string | undefined;
      /** The dedupe set is unchanged and already in this blob. */
      unchangedSpill?: string;
      writeId: string;
      /** This lease's recent write ids, `writeId` among them. */
      ownWrites: readonly string[];
      /** The state was read from this legacy row: mark it moved (conditionally) before creating the new one. */
      legacyEtag?: string;
      /**
       * The first write of a lease opened from memory: a refusal means someone wrote since, and
       * the caller reads the row next anyway, so it is not read here to tell a lost answer.
       */
      fromMemory?: boolean;
      signal?: AbortSignal;
    },
  ): Promise<{ etag: string; spill: string | undefined }> {
    const options = at.signal ? { signal: at.signal } : undefined;
    const table = await this.table();
    const { writeId, unchangedSpill } = at;
    if (at.legacyEtag !== undefined) await this.markMoved(table, tenantId, at.legacyEtag, writeId, at.ownWrites, options);
    let inline = unchangedSpill ? encodeDelivered(new Map()) : encodeDelivered(state.delivered);
    let spill: string | undefined = unchangedSpill;
    if (inline === undefined) {
      spill = spillBlobName(tenantId, writeId);
      const body = encodeDelivered(state.delivered, { unbounded: true })?.delivered ?? "";
      await this.spill.write(tenantId, spill, body, boundedSignal(this.timeoutMs, options));
      inline = encodeDelivered(new Map());
    }
    const row = toEntity(tenantId, state, lease, { writeId, deliveredBlob: spill ?? "", ...inline });
    let newEtag: string | undefined;
    let etag = at.etag;
    // Until this write is known to have landed, the row held here may not be the stored one.
    this.written.delete(tenantId);
    // Only a row storage answered for is remembered: an ETag adopted after a lost answer may
    // already cover another writer's Merge on top of ours (recordFailure keeps our write id).
    let answered = false;
    // Twice at most: a 412 against an earlier write of ours whose answer was lost is retried once.
    for (let attempt = 0; newEtag === undefined; attempt++) {
      try {
        const answer = etag === undefined ? await table.createEntity(row, this.signal(options)) : await table.updateEntity(row, "Replace", { etag, ...this.signal(options) });
        newEtag = answer.etag ?? "";
        answered = true;
      } catch (error) {
        // A create that meets an existing row is the same refusal as an update that meets another ETag.
        const refused = isConcurrencyConflict(error) || (etag === undefined && statusOf(error) === 409);
        const stored = refused && !at.fromMemory ? await this.storedWrite(tenantId) : undefined;
        if (stored?.writeId === writeId) {
          // Our own write committed and its answer was lost; the SDK's retry met our success.
          newEtag = stored.etag;
        } else if (stored && attempt === 0 && at.ownWrites.includes(stored.writeId)) {
          // An earlier write of this lease committed unseen (e.g. a renewal that timed out).
          etag = stored.etag;
        } else {
          // Only a definite refusal frees the new blob: after a timeout the row may point at it.
          if (spill && spill !== unchangedSpill && refused) void this.removeSpill(spill);
          if (refused) throw new LeaseLostError("taken");
          if (statusOf(error) === 404) throw new LeaseLostError("reset");
          throw error;
        }
      }
    }
    if (at.previousSpill && at.previousSpill !== spill) void this.removeSpill(at.previousSpill);
    // A row whose dedupe set is spilled is not kept: open reads that set from its blob anyway.
    if (answered && newEtag && !spill) this.written.set(tenantId, row, newEtag);
    return { etag: newEtag, spill };
  }

  /**
   * Marks the tenant's legacy row moved, under its ETag: a pull of an earlier version still
   * running (a deployment in progress) then finds it leased for an hour, and of two pulls moving
   * it only one gets past here. The row keeps its state, so a move cut short is finished by the
   * next pull (open ignores this lease), and a rollback resumes from it after the hour.
   */
  private async markMoved(
    table: TableClient,
    tenantId: string,
    etag: string,
    writeId: string,
    ownWrites: readonly string[],
    options: CallOptions | undefined,
  ): Promise<void> {
    const row = { partitionKey: LEGACY_PARTITION, rowKey: tenantId, leaseOwner: MOVED_OWNER, leaseUntil: this.clock() + MOVED_LEASE_MS, writeId };
    try {
      await table.updateEntity(row, "Merge", { etag, ...this.signal(options) });
    } catch (error) {
      if (statusOf(error) === 404) throw new LeaseLostError("reset");
      if (!isConcurrencyConflict(error)) throw error;
      // Our own mark, committed with its answer lost, or another writer's: only the first goes on.
      const stored = await this.readEntity(LEGACY_PARTITION, tenantId).catch(() => undefined);
      const storedId = stored?.["writeId"];
      if (typeof storedId !== "string" || !ownWrites.includes(storedId)) throw new LeaseLostError("taken");
    }
  }

  private async removeSpill(name: string): Promise<void> {
    await this.spill.remove(name, timeoutSignal(this.timeoutMs)).catch(() => undefined);
  }

  /** @internal used by PullLease: removes a blob no row points at (if it exists), in the background. */
  discardSpill(name: string): void {
    void this.removeSpill(name);
  }

  /** The write id and ETag the row holds now, or undefined if it cannot be read. */
  private async storedWrite(tenantId: string): Promise<{ writeId: string; etag: string } | undefined> {
    try {
      const { partitionKey, rowKey } = pullKey(tenantId);
      const entity = await this.readEntity(partitionKey, rowKey);
      const writeId = entity ? str(entity["writeId"]) : undefined;
      return entity && writeId ? { writeId, etag: entity.etag } : undefined;
    } catch {
      return undefined;
    }
  }

  /** Health for the operator API: everything except secrets and the dedupe set. */
  async readAll(): Promise<Map<string, PullState & { incidents?: PullIncidents }>> {
    const table = await this.table();
    const states = new Map<string, PullState & { incidents?: PullIncidents }>();
    // Only the health columns: the dedupe set (up to ~1 MB a tenant) and the token cache stay in
    // storage, so listing 1,000 tenants stays a few hundred kilobytes.
    for await (const entity of table.listEntities<Entity>({
      queryOptions: { filter: odata`RowKey eq ${ROW}`, select: [...HEALTH_COLUMNS] },
    })) {
      if (entity.partitionKey) states.set(entity.partitionKey, fromEntity(entity, new Map()));
    }
    // Tenants not pulled since an upgrade (see ROW) are still in the legacy partition.
    for await (const entity of table.listEntities<Entity>({
      // Stryker disable next-line ArrayDeclaration: an empty select returns every column, the health columns among them
      queryOptions: { filter: odata`PartitionKey eq ${LEGACY_PARTITION}`, select: [...HEALTH_COLUMNS] },
    })) {
      if (entity.rowKey && !states.has(entity.rowKey)) states.set(entity.rowKey, fromEntity(entity, new Map()));
    }
    for await (const entity of table.listEntities<Entity>({ queryOptions: { filter: odata`PartitionKey eq ${INCIDENT_PARTITION}` } })) {
      const state = entity.rowKey ? states.get(entity.rowKey) : undefined;
      if (state) state.incidents = incidentsOf(entity);
    }
    return states;
  }

  /** The tenant's pull state as stored (tests and diagnostics), without taking the lease. */
  async read(tenantId: string): Promise<(PullState & { leaseOwner?: string; leaseUntil?: number }) | undefined> {
    const row = await this.readPullRow(tenantId);
    if (!row) return undefined;
    const { entity } = row;
    const spill = str(entity["deliveredBlob"]);
    const delivered = spill ? decodeDelivered({ delivered: (await this.spill.read(spill, timeoutSignal(this.timeoutMs))) ?? "" }) : decodeDelivered(entity);
    // A moved legacy row's lease only keeps older versions out: no pull holds it.
    const owner = row.legacy && entity["leaseOwner"] === MOVED_OWNER ? undefined : str(entity["leaseOwner"]);
    return { ...fromEntity(entity, delivered), ...(owner ? { leaseOwner: owner, leaseUntil: num(entity["leaseUntil"]) ?? 0 } : {}) };
  }

  /**
   * Forgets everything about the tenant's pulls: checkpoint, dedupe set, cached access token,
   * health. Offboarding and re-registration start from here, and a pull still running loses its
   * lease at its next save.
   */
  async reset(tenantId: string): Promise<void> {
    this.written.delete(tenantId);
    const table = await this.table();
    for (const [partitionKey, rowKey] of [[tenantId, ROW], [LEGACY_PARTITION, tenantId], [INCIDENT_PARTITION, tenantId]] as const) {
      try {
        await table.deleteEntity(partitionKey, rowKey, this.signal());
      } catch (error) {
        if (statusOf(error) !== 404) throw error;
      }
    }
    await this.spill.removeAll(tenantId, timeoutSignal(4 * this.timeoutMs));
  }

  /** Records a failure that happened outside a held lease (e.g. a poison message). */
  async recordFailure(tenantId: string, code: string, message: string): Promise<void> {
    this.written.delete(tenantId);
    const table = await this.table();
    for (let attempt = 0; attempt < 5; attempt++) {
      const row = await this.readPullRow(tenantId);
      const entity = row?.entity;
      try {
        if (!entity) {
          await table.createEntity({ ...pullKey(tenantId), lastErrorCode: code, lastErrorMessage: message, consecutiveFailures: 1 }, this.signal());
          return;
        }
        // Where the state is: a legacy row is moved, checkpoint and all, by the tenant's next pull.
        await table.updateEntity(
          {
            ...(row.legacy ? { partitionKey: LEGACY_PARTITION, rowKey: tenantId } : pullKey(tenantId)),
            lastErrorCode: code,
            lastErrorMessage: message,
            consecutiveFailures: (num(entity["consecutiveFailures"]) ?? 0) + 1,
            lastRunAt: new Date(this.clock()).toISOString(),
          },
          "Merge",
          { etag: entity.etag, ...this.signal() },
        );
        return;
      } catch (error) {
        if (!isConcurrencyConflict(error) && statusOf(error) !== 409) throw error;
      }
    }
  }

  /**
   * Counts a lost lease or a failed release in a row of its own: the pull entity belongs to
   * whoever holds the lease now, and writing to it would take their lease away.
   */
  async recordIncident(tenantId: string, kind: "lease_lost" | "release_failed"): Promise<void> {
    const table = await this.table();
    const at = new Date(this.clock()).toISOString();
    for (let attempt = 0; attempt < 5; attempt++) {
      const entity = await this.readEntity(INCIDENT_PARTITION, tenantId);
      const incidents = entity ? incidentsOf(entity) : { leaseLost: 0, releaseFailed: 0 };
      if (kind === "lease_lost") Object.assign(incidents, { leaseLost: incidents.leaseLost + 1, lastLeaseLostAt: at });
      else Object.assign(incidents, { releaseFailed: incidents.releaseFailed + 1, lastReleaseFailedAt: at });
      const row = { partitionKey: INCIDENT_PARTITION, rowKey: tenantId, ...incidents };
      try {
        if (entity) await table.updateEntity(row, "Replace", { etag: entity.etag, ...this.signal() });
        else await table.createEntity(row, this.signal());
        return;
      } catch (error) {
        if (!isConcurrencyConflict(error) && statusOf(error) !== 409) throw error;
      }
    }
  }
}

function incidentsOf(entity: Entity): PullIncidents {
  const incidents: PullIncidents = { leaseLost: num(entity["leaseLost"]) ?? 0, releaseFailed: num(entity["releaseFailed"]) ?? 0 };
  const lost = str(entity["lastLeaseLostAt"]);
  if (lost) incidents.lastLeaseLostAt = lost;
  const failed = str(entity["lastReleaseFailedAt"]);
  if (failed) incidents.lastReleaseFailedAt = failed;
  return incidents;
}

export function emptyState(): PullState {
  return { delivered: new CompactVersionSet(), apiCalls: [], consecutiveFailures: 0, deadLetters: 0 };
}
