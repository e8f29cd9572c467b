import { describe, expect, it } from "vitest";
import { NOTIFY_FORMATS } from "../../shared/config";
import type { NotificationEvent } from "../../shared/notifications/events";
import { buildMessage } from "../../shared/notifications/formats";
import { digestOf, headline, type MessageInput } from "../../shared/notifications/formats/digest";
import { escapeMrkdwn } from "../../shared/notifications/formats/slack";

const at = "2025-03-01T12:05:00.000Z";

function alertsEvent(tenant: number, total: number, titleLength = 180): NotificationEvent {
  const listed = Math.min(total, 20);
  const tenantId = `00000000-0000-4000-8000-${String(tenant).padStart(12, "0")}`;
  return {
    id: `e-${tenant}`,
    kind: "alerts",
    at,
    tenantId,
    tenantName: `Tenant ${tenant} ${"x".repeat(100)}`,
    minSeverity: "High",
    total,
    alerts: Array.from({ length: listed }, (_, i) => ({
      id: `da${tenant}_${i}`,
      title: `Suspicious activity ${i} ${"y".repeat(titleLength)}`,
      severity: i % 3 === 0 ? "Medium" : "High",
      category: "Malware",
      lastUpdateTime: `2025-03-01T12:0${i % 10}:00.000Z`,
    })),
  };
}

function input(events: NotificationEvent[], dropped = 0): MessageInput {
  return { events, sentAt: at, dropped, consoleUrl: "https://connector.example.test/api/console" };
}

describe("notification messages", () => {
  it("stay inside Teams' and Slack's limits for a burst across 300 tenants, counting what they cannot show", () => {
    const events = Array.from({ length: 300 }, (_, i) => alertsEvent(i, 35));
    const teams = buildMessage("teams", input(events, 4));
    expect(Buffer.byteLength(teams)).toBeLessThan(28_000);
    expect(teams).toMatch(/…and \d+ more tenants \(\d+ alerts, 0 health changes\)/);
    expect(teams).toContain("4 earlier notifications could not be delivered");

    const slack = JSON.parse(buildMessage("slack", input(events))) as { blocks: Array<{ type: string; text?: { text: string } }> };
    expect(slack.blocks.length).toBeLessThanOrEqual(50);
    const sections = slack.blocks.filter((block) => block.type === "section").map((block) => block.text?.text ?? "");
    const shown = sections.length - 1;
    expect(slack.blocks.at(-2)?.text?.text).toBe(`…and ${300 - shown} more tenants (${(300 - shown) * 35} alerts, 0 health changes); see the operator console.`);
    for (const text of sections) expect(text.length).toBeLessThanOrEqual(3000);
    expect(sections.join("").length).toBeLessThan(13_000);
    // Short entries: the block limit, not the text budget, is what stops them.
    const smallEvents = Array.from({ length: 300 }, (_, i) => ({ ...alertsEvent(i, 1, 5), tenantName: `T${i}` }));
    const small = JSON.parse(buildMessage("slack", input(smallEvents))) as { blocks: unknown[] };
    expect(small.blocks).toHaveLength(49);

    const json = JSON.parse(buildMessage("json", input(events))) as { events: unknown[] };
    expect(json.events).toHaveLength(300);
  });

  it("list a tenant's alerts most severe first, ten at most in chat, with the rest counted", () => {
    const digest = digestOf([alertsEvent(1, 35)]);
    const tenant = digest.tenants[0];
    expect(tenant?.alerts.slice(0, 13).every((alert) => alert.severity === "High")).toBe(true);
    const slack = buildMessage("slack", input([alertsEvent(1, 35, 20)]));
    expect(slack.match(/• \*High\*/g)).toHaveLength(10);
    expect(slack).toContain("…and 25 more alerts (Defender portal)");
  });

  it("put the most urgent tenant first and say what happened in the headline", () => {
    const health = (tenant: number, to: "degraded" | "reconsent_required" | "healthy"): NotificationEvent => ({
      id: `h-${tenant}`,
      kind: "health",
      at,
      tenantId: `00000000-0000-4000-8000-${String(tenant).padStart(12, "0")}`,
      tenantName: `Tenant ${tenant}`,
      from: "healthy",
      to,
    });
    const digest = digestOf([alertsEvent(1, 2), health(2, "degraded"), health(3, "reconsent_required")]);
    expect(digest.tenants.map((tenant) => tenant.tenantName)).toEqual(["Tenant 3", "Tenant 2", expect.stringMatching(/^Tenant 1 /)]);
    expect(headline(digest)).toBe("Defender connector: 2 health changes, 2 new alerts");
  });

  it("keep the spaces between a Teams card's text runs, which a client joins as they are", () => {
    const health: NotificationEvent = { id: "h", kind: "health", at, tenantId: "t", tenantName: "T", from: "healthy", to: "degraded", errorCode: "defender_forbidden" };
    const card = buildMessage("teams", input([health, alertsEvent(1, 1, 5)]));
    expect(card).toContain('{"type":"TextRun","text":"Health: "}');
    expect(card).toMatch(/"text":"  Suspicious activity 0 y{5}","selectAction"/);
  });

  it("escape exactly Slack's three control characters", () => {
    expect(escapeMrkdwn("<!channel> & <https://x|y>")).toBe("&lt;!channel&gt; &amp; &lt;https://x|y&gt;");
  });

  it("exist for every format the settings accept", () => {
    for (const format of NOTIFY_FORMATS) expect(() => JSON.parse(buildMessage(format, input([alertsEvent(1, 1)])))).not.toThrow();
  });
});
