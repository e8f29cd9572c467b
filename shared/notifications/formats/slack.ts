import type { TenantHealthLevel } from "../../pull/observer";
import { countWithin, digestOf, droppedNotice, headline, moreTenants, oneLine, shortTime, tenantLines, type MessageInput, type TenantDigest } from "./digest";

/**
 * The `slack` format: an incoming-webhook message, `{text, blocks}` in Block Kit with mrkdwn.
 * Slack's limits shape it: at most 50 blocks, 3,000 characters a section, 150 a header; `text`
 * is the fallback shown in notifications.
 */
const MAX_BLOCKS = 50;
/** Header, dropped notice, "…and N more tenants", context. */
const FIXED_BLOCKS = 4;
const SECTION_CHARS = 2_900;
/**
 * All tenant sections together: Slack refuses some messages far below 50 full sections
 * (`msg_blocks_too_long`) without documenting the total, so the message stays modest.
 */
const TENANT_TEXT_BUDGET = 12_000;

const LEVEL_EMOJI: Record<TenantHealthLevel, string> = {
  healthy: ":white_check_mark:",
  degraded: ":warning:",
  reconsent_required: ":no_entry:",
};

/**
 * mrkdwn control characters. Escaped, `<` and `>` cannot open a link or a mention (`<!channel>`)
 * and `&` cannot forge an entity; Slack asks for exactly these three.
 */
export function escapeMrkdwn(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

interface Section {
  type: "section";
  text: { type: "mrkdwn"; text: string };
}

const section = (text: string): Section => ({ type: "section", text: { type: "mrkdwn", text } });

function tenantSection(tenant: TenantDigest): Section {
  const lines = tenantLines(tenant);
  const text = [`*${escapeMrkdwn(lines.name)}*  \`${lines.tenantId}\``];
  for (const change of lines.health) text.push(`${LEVEL_EMOJI[change.to]} Health: ${escapeMrkdwn(change.text)}`);
  if (lines.summary) text.push(`*${escapeMrkdwn(lines.summary)}:*`);
  let listed = 0;
  for (const alert of lines.alerts) {
    const line = `• *${escapeMrkdwn(alert.severity)}* <${alert.url}|${escapeMrkdwn(alert.title)}> · ${escapeMrkdwn(alert.detail)}`;
    if (text.join("\n").length + line.length > SECTION_CHARS) break;
    text.push(line);
    listed++;
  }
  const more = lines.more(listed);
  if (more) text.push(escapeMrkdwn(more));
  return section(text.join("\n"));
}

export function slackMessage(input: MessageInput): Record<string, unknown> {
  const digest = digestOf(input.events);
  const title = headline(digest);
  const sections = digest.tenants.slice(0, MAX_BLOCKS - FIXED_BLOCKS).map(tenantSection);
  const shown = countWithin(sections, (block) => block.text.text.length, TENANT_TEXT_BUDGET);
  const rest = digest.tenants.slice(shown);
  const blocks: Array<Section | Record<string, unknown>> = [{ type: "header", text: { type: "plain_text", text: oneLine(title, 150) } }];
  if (input.dropped > 0) blocks.push(section(`:information_source: ${escapeMrkdwn(droppedNotice(input.dropped))}`));
  blocks.push(...sections.slice(0, shown));
  if (rest.length > 0) blocks.push(section(escapeMrkdwn(moreTenants(rest))));
  blocks.push({
    type: "context",
    elements: [{ type: "mrkdwn", text: `Sent ${escapeMrkdwn(shortTime(input.sentAt))} · <${input.consoleUrl}|Operator console>` }],
  });
  return { text: title, blocks };
}
