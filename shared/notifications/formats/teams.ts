import type { TenantHealthLevel } from "../../pull/observer";
import { countWithin, digestOf, droppedNotice, headline, moreTenants, shortTime, tenantLines, type MessageInput, type TenantDigest } from "./digest";

/**
 * The `teams` format: a message for a Teams Workflows ("Post to a channel when a webhook request
 * is received") webhook, carrying one Adaptive Card. Text from outside (tenant names, alert
 * titles) goes only into `TextRun`s, which render no Markdown, so a title cannot make a link or a
 * heading; TextBlocks hold only the app's own words. Teams refuses messages above about 28 KB,
 * so tenants are added while the card stays under a smaller budget and the rest are counted.
 */
const CARD_BUDGET_BYTES = 24_000;

const LEVEL_COLOR: Record<TenantHealthLevel, string> = { healthy: "Good", degraded: "Warning", reconsent_required: "Attention" };

type Element = Record<string, unknown>;

/**
 * A TextRun. Its text is already on one line (tenantLines); a `{{` is broken up so that no client
 * reads `{{DATE(…)}}` in a title as a date function. Spaces are kept: runs join without any.
 */
const run = (text: string, style: Element = {}): Element => ({ type: "TextRun", text: text.replace(/\{\{/g, "{\u200b{"), ...style });
const rich = (...inlines: Element[]): Element => ({ type: "RichTextBlock", inlines });
const note = (text: string): Element => ({ type: "TextBlock", text, wrap: true, isSubtle: true, spacing: "Small" });

function tenantContainer(tenant: TenantDigest): Element {
  const lines = tenantLines(tenant);
  const items: Element[] = [rich(run(lines.name, { weight: "Bolder" }), run(`  ${lines.tenantId}`, { isSubtle: true, size: "Small" }))];
  for (const change of lines.health) items.push(rich(run("Health: "), run(change.text, { weight: "Bolder", color: LEVEL_COLOR[change.to] })));
  if (lines.summary) items.push({ type: "TextBlock", text: lines.summary, wrap: true, spacing: "Small" });
  for (const alert of lines.alerts) {
    items.push(
      rich(
        run(alert.severity, { weight: "Bolder", color: "Attention" }),
        run(`  ${alert.title}`, { selectAction: { type: "Action.OpenUrl", url: alert.url } }),
        run(`  ${alert.detail}`, { isSubtle: true }),
      ),
    );
  }
  const more = lines.more(lines.alerts.length);
  if (more) items.push(note(more));
  return { type: "Container", separator: true, spacing: "Medium", items };
}

function envelope(body: Element[], consoleUrl: string): Record<string, unknown> {
  return {
    type: "message",
    attachments: [
      {
        contentType: "application/vnd.microsoft.card.adaptive",
        contentUrl: null,
        content: {
          $schema: "http://adaptivecards.io/schemas/adaptive-card.json",
          type: "AdaptiveCard",
          version: "1.4",
          body,
          actions: [{ type: "Action.OpenUrl", title: "Open the operator console", url: consoleUrl }],
        },
      },
    ],
  };
}

const bytes = (value: unknown): number => Buffer.byteLength(JSON.stringify(value));

export function teamsMessage(input: MessageInput): Record<string, unknown> {
  const digest = digestOf(input.events);
  const head: Element[] = [{ type: "TextBlock", text: headline(digest), weight: "Bolder", size: "Medium", wrap: true }];
  if (input.dropped > 0) head.push(note(droppedNotice(input.dropped)));
  const footer = note(`Sent ${shortTime(input.sentAt)}`);
  // The frame with room for the "…and N more tenants" line, then each tenant's container (and its comma).
  const frame = bytes(envelope([...head, footer, note(moreTenants(digest.tenants))], input.consoleUrl));
  const containers = digest.tenants.map(tenantContainer);
  const shown = countWithin(containers, (container) => bytes(container) + 1, CARD_BUDGET_BYTES - frame);
  const body = [...head, ...containers.slice(0, shown)];
  const rest = digest.tenants.slice(shown);
  if (rest.length > 0) body.push(note(moreTenants(rest)));
  body.push(footer);
  return envelope(body, input.consoleUrl);
}
