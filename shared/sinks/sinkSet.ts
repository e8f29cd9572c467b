import type { Clock } from "../clock";
import { describeError } from "../errors";
import { SinkError, type AlertBatchKey, type AlertEnvelope, type AlertSink, type CallOptions, type RefusedVersion } from "./alertSink";
import type { ParkingStore } from "./parking";

export const SINK_NAMES = ["blob", "sentinel", "splunk", "eventhubs"] as const;
export type SinkName = (typeof SINK_NAMES)[number];

export interface NamedSink {
  name: SinkName;
  sink: AlertSink;
}

/** One sink's own progress for one tenant, kept in the tenant's pull state. */
export interface SinkProgress {
  /** Parked pages `[parkedFrom, parkedTo)` wait for this sink, oldest first. */
  parkedFrom: number;
  parkedTo: number;
  /** When the sink fell behind (its first parked page since it was last caught up). */
  behindSince?: string;
  lastDeliveryAt?: string;
  lastErrorAt?: string;
  lastErrorCode?: string;
  lastErrorMessage?: string;
}

export type SinkProgressMap = Record<string, SinkProgress>;

export interface Refusal {
  sink: SinkName;
  key: AlertBatchKey;
  version: RefusedVersion;
}

/** What happened to one page across the sinks. */
export interface PageOutcome {
  delivered: SinkName[];
  parked: SinkName[];
  refused: Refusal[];
}

function progressOf(progress: SinkProgressMap, name: SinkName): SinkProgress {
  let entry = progress[name];
  if (!entry) {
    entry = { parkedFrom: 0, parkedTo: 0 };
    progress[name] = entry;
  }
  return entry;
}

const behind = (entry: SinkProgress): boolean => entry.parkedTo > entry.parkedFrom;

/** A short, safe description of a sink failure: its status or service code, never a body. */
function errorCodeOf(error: SinkError): string {
  if (error.details.code) return `sink_${error.details.code}`.slice(0, 64);
  return error.status === undefined ? "sink_unreachable" : `sink_http_${error.status}`;
}

/**
 * Several sinks for one pull. The API is read once; each page goes to every sink. A sink that
 * fails, or is still catching up, gets the page parked for it instead (in order, durably), so
 * the page is acknowledged for everyone and no healthy sink ever sees it twice because another
 * was down. A parked sink catches up from its own position at the start of later runs.
 *
 * Guarantee per sink: every version at least once. A crash between a sink's write and the save
 * after it repeats that one page (or parked page) for that sink only.
 */
export class SinkSet {
  constructor(
    readonly sinks: readonly NamedSink[],
    private readonly parking: ParkingStore,
    private readonly clock: Clock,
  ) {
    if (sinks.length < 2) throw new RangeError("SinkSet: a single sink is used directly, without parking");
  }

  /** Hands the page to every sink, parking it for those that are down or behind; throws only if parking itself fails. */
  async deliver(key: AlertBatchKey, envelopes: readonly AlertEnvelope[], progress: SinkProgressMap, options: CallOptions): Promise<PageOutcome> {
    const outcome: PageOutcome = { delivered: [], parked: [], refused: [] };
    await Promise.all(
      this.sinks.map(async ({ name, sink }) => {
        const entry = progressOf(progress, name);
        if (!behind(entry)) {
          try {
            const result = await sink.write(key, envelopes, options);
            for (const version of result?.refused ?? []) outcome.refused.push({ sink: name, key, version });
            entry.lastDeliveryAt = new Date(this.clock()).toISOString();
            outcome.delivered.push(name);
            return;
          } catch (error) {
            if (!(error instanceof SinkError)) throw error;
            this.recordError(entry, error);
          }
        }
        await this.park(name, key, envelopes, entry, options);
        outcome.parked.push(name);
      }),
    );
    return outcome;
  }

  /**
   * Delivers parked pages, oldest first, for every sink that has some, until each is caught up,
   * fails again, or `until` passes. What a sink refuses is handed to `refused` before the parked
   * page is removed, and `saved` runs after each delivered page, so a crash repeats at most that
   * page and never loses a refusal.
   */
  async drain(
    tenantId: string,
    progress: SinkProgressMap,
    options: CallOptions & { until: number; saved: () => Promise<void>; refused: (refusals: Refusal[]) => Promise<void> },
  ): Promise<{ delivered: number }> {
    let delivered = 0;
    // One sink at a time: each save covers the whole progress map, and saves are serialised anyway.
    for (const { name, sink } of this.sinks) {
      const entry = progressOf(progress, name);
      while (behind(entry) && this.clock() < options.until) {
        const batch = await this.parking.read(name, tenantId, entry.parkedFrom, options);
        if (batch) {
          try {
            const result = await sink.write(batch.key, batch.envelopes, options);
            const refusals = (result?.refused ?? []).map((version) => ({ sink: name, key: batch.key, version }));
            if (refusals.length > 0) await options.refused(refusals);
          } catch (error) {
            if (!(error instanceof SinkError)) throw error;
            this.recordError(entry, error);
            break;
          }
          delivered += batch.envelopes.length;
        }
        await this.parking.remove(name, tenantId, entry.parkedFrom, options);
        entry.parkedFrom++;
        entry.lastDeliveryAt = new Date(this.clock()).toISOString();
        if (!behind(entry)) delete entry.behindSince;
        await options.saved();
      }
    }
    return { delivered };
  }

  private async park(name: SinkName, key: AlertBatchKey, envelopes: readonly AlertEnvelope[], entry: SinkProgress, options: CallOptions): Promise<void> {
    await this.parking.park(name, key.tenantId, entry.parkedTo, { key, envelopes: [...envelopes] }, options);
    if (!behind(entry)) entry.behindSince = new Date(this.clock()).toISOString();
    entry.parkedTo++;
  }

  private recordError(entry: SinkProgress, error: SinkError): void {
    entry.lastErrorAt = new Date(this.clock()).toISOString();
    entry.lastErrorCode = errorCodeOf(error);
    entry.lastErrorMessage = describeError(error).slice(0, 300);
  }
}

/**
 * All sinks as one, for a one-off delivery outside a pull (a dead-letter re-drive): each sink in
 * turn, failing at the first failure. A failed re-drive keeps its dead letter, so the sinks that
 * took it may get it again on the next try (at-least-once).
 */
export function everySink(sinks: readonly NamedSink[]): AlertSink {
  return {
    async write(key, alerts, options) {
      const refused: RefusedVersion[] = [];
      for (const { name, sink } of sinks) {
        for (const version of (await sink.write(key, alerts, options))?.refused ?? []) refused.push({ ...version, sink: name });
      }
      return refused.length > 0 ? { refused } : undefined;
    },
  };
}
