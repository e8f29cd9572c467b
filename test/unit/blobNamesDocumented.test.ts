/**
 * The blob names SIEM engineers read in the documentation are the names the code writes: the
 * README's alert blobs and docs/pull.md's dead letters, each template turned into a pattern and
 * matched against a name the code produces.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { BlobAlertSink } from "../../shared/sinks/blobAlertSink";
import { BlobDeadLetterStore } from "../../shared/sinks/deadLetters";
import type { AlertEnvelope } from "../../shared/sinks/alertSink";

const ROOT = path.resolve(__dirname, "..", "..");
const TENANT = "2d10d896-4796-4748-8fd2-6be4e5275ac0";

/** `{name}` placeholders of a documented template, each replaced by what it stands for. */
function templatePattern(template: string, parts: Record<string, string>): RegExp {
  const escaped = template.replace(/[.*+?^$()|[\]\\]/g, "\\$&");
  const source = escaped.replace(/\{([^}]+)\}/g, (_m, name: string) => {
    const part = parts[name];
    if (part === undefined) throw new Error(`the documentation names {${name}}, which the test does not know`);
    return part;
  });
  return new RegExp(`^${source}$`);
}

function documented(file: string, lead: RegExp): string {
  const text = readFileSync(path.join(ROOT, file), "utf8");
  const match = lead.exec(text);
  if (!match?.[1]) throw new Error(`${file} no longer documents the name after ${lead}`);
  return match[1];
}

describe("documented blob names", () => {
  it("README's alert blob name is what the blob sink writes", () => {
    const template = documented("README.md", /Blob sink: `([^`]+)`/);
    const alert = { id: "da1", lastUpdateTime: "2026-11-30T05:00:00.1234567Z", updatedAtKey: "2026-11-30T05:00:00.1234567Z", updatedAtMs: 0, json: "{}" };
    const envelope: AlertEnvelope = { tenantId: TENANT, tenantName: "Contoso", source: "mde", pulledAt: "2026-11-30T05:01:00.000Z", alert };
    const name = BlobAlertSink.blobNameFor({ tenantId: TENANT, pageFrom: "2026-11-30T04:00:00.000Z", pageTo: "2026-11-30T05:00:00.500Z", skip: 50 }, [envelope]);
    expect(name).toMatch(
      templatePattern(template, {
        tenantId: TENANT,
        yyyy: "2026",
        MM: "11",
        dd: "30",
        pageFrom: "20261130T0400000000000Z",
        pageTo: "20261130T0500005000000Z",
        "skip:9": "000000050",
        content: "[0-9a-f]{12}",
      }),
    );
  });

  it("docs/pull.md's dead-letter name is what the dead-letter store writes", () => {
    const template = documented("docs/pull.md", /^`(\{tenantId\}[^`]+\.json)`/m);
    const name = BlobDeadLetterStore.nameFor({
      tenantId: TENANT,
      reason: "missing_id",
      raw: '{"title":"no id"}',
    });
    expect(name).toMatch(templatePattern(template, { tenantId: TENANT, reason: "missing_id", hash: "[0-9a-f]{16}" }));
  });
});
