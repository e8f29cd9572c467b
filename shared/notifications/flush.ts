import type { Clock } from "../clock";
import type { NotifyFormat } from "../config";
import { describeError } from "../errors";
import type { Logger } from "../logging";
import type { DeliveryStatus, DeliveryStatusStore } from "./deliveryStatus";
import { buildMessage } from "./formats";
import type { NotificationOutbox } from "./outbox";
import type { DeliveryResult, WebhookSender } from "./sender";

export interface FlushSummary {
  outcome: "delivered" | "failed" | "idle" | "error";
  /** Events in the message (delivered or kept for the next cycle). */
  events: number;
  /** Events dropped unsent by this flush (too old, beyond the cap, unreadable). */
  dropped: number;
}

/**
 * Once per pull cycle (the timer, after its fan-out): the outbox's events as ONE message (up to
 * OUTBOX_LIMITS.messageEvents), so a burst of alerts across tenants is one post. Delivered events
 * are deleted; if the receiver is down or refuses, they stay for the next cycle, until they are a
 * day old or beyond the outbox's cap, when they are dropped and counted. Never throws: a webhook
 * must not fail the timer.
 */
export class NotificationFlush {
  constructor(
    private readonly deps: {
      outbox: NotificationOutbox;
      status: DeliveryStatusStore;
      sender: WebhookSender;
      format: NotifyFormat;
      consoleUrl: string;
      clock: Clock;
    },
  ) {}

  async run(log: Logger): Promise<FlushSummary> {
    try {
      return await this.flush(log);
    } catch (error) {
      // Storage trouble, most likely: the events stay where they are for the next cycle.
      log.warn("notifications: the flush failed; queued events are kept for the next cycle", {
        code: "notify_flush_failed",
        detail: describeError(error),
      });
      return { outcome: "error", events: 0, dropped: 0 };
    }
  }

  private async flush(log: Logger): Promise<FlushSummary> {
    const { outbox, status, sender, clock } = this.deps;
    const [{ events, dropped, later }, previous] = await Promise.all([outbox.pending(), status.read()]);
    if (dropped.length > 0) {
      await outbox.remove(dropped);
      log.warn("notifications: events dropped unsent (older than 24 hours, beyond the outbox limit, or unreadable)", {
        code: "notify_dropped",
        dropped: dropped.length,
        droppedTotal: previous.droppedTotal + dropped.length,
      });
    }
    const counted: DeliveryStatus = {
      ...previous,
      droppedSinceDelivery: previous.droppedSinceDelivery + dropped.length,
      droppedTotal: previous.droppedTotal + dropped.length,
    };
    if (events.length === 0) {
      if (dropped.length > 0 || previous.pending > 0) await this.record({ ...counted, pending: 0 }, log);
      return { outcome: "idle", events: 0, dropped: dropped.length };
    }
    const now = new Date(clock()).toISOString();
    const body = buildMessage(this.deps.format, {
      events,
      sentAt: now,
      dropped: counted.droppedSinceDelivery,
      consoleUrl: this.deps.consoleUrl,
    });
    const result = await sender.send(body);
    if (!result.ok) {
      log.warn("notifications: webhook delivery failed; the events are kept for the next cycle", {
        code: "notify_failed",
        reason: result.code,
        events: events.length,
        attempts: result.attempts,
      });
      await this.record(failedStatus(counted, result, now, events.length + later), log);
      return { outcome: "failed", events: events.length, dropped: dropped.length };
    }
    log.info("notifications: message delivered", { code: "notify_delivered", events: events.length, later, attempts: result.attempts });
    await this.record(
      {
        ...counted,
        lastAttemptAt: now,
        lastOutcome: "delivered",
        lastDeliveredAt: now,
        lastErrorCode: undefined,
        pending: later,
        droppedSinceDelivery: 0,
        consecutiveFailures: 0,
      },
      log,
    );
    try {
      await outbox.remove(events.map((event) => event.id));
    } catch (error) {
      // The receiver has them; left in the outbox they go out once more next cycle (ids let a receiver drop them).
      log.warn("notifications: delivered events could not be removed and may be sent again", {
        code: "notify_remove_failed",
        detail: describeError(error),
      });
    }
    return { outcome: "delivered", events: events.length, dropped: dropped.length };
  }

  /** Best-effort: a status that could not be written only makes the health check a cycle late. */
  private async record(next: DeliveryStatus, log: Logger): Promise<void> {
    try {
      await this.deps.status.write(next);
    } catch (error) {
      log.warn("notifications: could not record the delivery status", { code: "notify_status_failed", detail: describeError(error) });
    }
  }
}

function failedStatus(counted: DeliveryStatus, result: Extract<DeliveryResult, { ok: false }>, now: string, pending: number): DeliveryStatus {
  return {
    ...counted,
    lastAttemptAt: now,
    lastOutcome: "failed",
    lastErrorCode: result.code,
    pending,
    consecutiveFailures: counted.consecutiveFailures + 1,
  };
}
