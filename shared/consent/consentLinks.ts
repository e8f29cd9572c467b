import { randomBytes } from "node:crypto";
import { odata } from "@azure/data-tables";
import type { Clock } from "../clock";
import { TABLES } from "../storage/names";
import { isConcurrencyConflict, type TableFactory } from "../state/tables";
import { LINK_ID } from "./consentLink";

/** Why a link was issued: the first consent of a registration, or an operator's explicit request. */
export type LinkPurpose = "registration" | "reconsent";

/** Who issued or revoked a link, as the audit trail names them. */
export interface LinkActor {
  kind: string;
  id: string;
  name: string;
}

/** An issued consent link as the operator sees it: never its signature, so never the link itself. */
export interface ConsentLinkRecord {
  linkId: string;
  tenantId: string;
  purpose: LinkPurpose;
  /** The alert source the consent is for, when the link asks for a source other than the tenant's. */
  source?: string;
  createdAt: string;
  expiresAt: string;
  issuedBy: string;
  usedAt?: string;
  revokedAt?: string;
  revokedBy?: string;
}

/** Why a link may not start a sign-in (or finish one). */
export type LinkRefusal = "unknown_link" | "revoked" | "spent";

interface LinkEntity {
  partitionKey: string;
  rowKey: string;
  registeredAt: string;
  purpose: string;
  source: string;
  createdAt: string;
  expiresAt: string;
  issuedBy: string;
  usedAt: string;
  revokedAt: string;
  revokedBy: string;
}

/** Links listed per tenant: the newest this many (a tenant with more has had a very long life). */
const LIST_LIMIT = 200;

function toRecord(entity: LinkEntity): ConsentLinkRecord {
  return {
    linkId: entity.rowKey,
    tenantId: entity.partitionKey,
    purpose: entity.purpose === "reconsent" ? "reconsent" : "registration",
    ...(entity.source ? { source: entity.source } : {}),
    createdAt: entity.createdAt,
    expiresAt: entity.expiresAt,
    issuedBy: entity.issuedBy,
    ...(entity.usedAt ? { usedAt: entity.usedAt } : {}),
    ...(entity.revokedAt ? { revokedAt: entity.revokedAt, revokedBy: entity.revokedBy } : {}),
  };
}

/**
 * The record of every consent link issued, one partition per tenant. A signed link proves only
 * that this app issued it; the record says whether it may still be used: not revoked, not spent.
 * A link is spent once a consent through it connected the tenant, so a forwarded or leaked link
 * cannot replace a working consent.
 */
export class ConsentLinkStore {
  constructor(
    private readonly tables: TableFactory,
    private readonly clock: Clock,
  ) {}

  private table() {
    return this.tables.open(TABLES.consentLinks);
  }

  async issue(input: {
    tenantId: string;
    registeredAt: string;
    purpose: LinkPurpose;
    ttlMs: number;
    issuedBy: LinkActor;
    source?: string;
  }): Promise<ConsentLinkRecord & { expiresAtMs: number }> {
    const now = this.clock();
    // Whole seconds: the link's `exp` is in seconds and must name the same instant.
    const expiresAtMs = Math.floor((now + input.ttlMs) / 1000) * 1000;
    const entity: LinkEntity = {
      partitionKey: input.tenantId,
      rowKey: randomBytes(16).toString("base64url"),
      registeredAt: input.registeredAt,
      purpose: input.purpose,
      source: input.source ?? "",
      createdAt: new Date(now).toISOString(),
      expiresAt: new Date(expiresAtMs).toISOString(),
      issuedBy: input.issuedBy.name.slice(0, 128),
      usedAt: "",
      revokedAt: "",
      revokedBy: "",
    };
    await (await this.table()).createEntity(entity);
    return { ...toRecord(entity), expiresAtMs };
  }

  private async read(tenantId: string, linkId: string): Promise<(LinkEntity & { etag: string }) | undefined> {
    if (!LINK_ID.test(linkId)) return undefined;
    try {
      return await (await this.table()).getEntity<LinkEntity>(tenantId, linkId);
    } catch (error) {
      if ((error as { statusCode?: unknown }).statusCode === 404) return undefined;
      throw error;
    }
  }

  /** The link of the tenant's current registration, or undefined (another registration's links are unknown). */
  async get(tenantId: string, linkId: string, registeredAt: string): Promise<ConsentLinkRecord | undefined> {
    const entity = await this.read(tenantId, linkId);
    return entity && entity.registeredAt === registeredAt ? toRecord(entity) : undefined;
  }

  /** The links of the tenant's current registration, newest first. */
  async list(tenantId: string, registeredAt: string): Promise<ConsentLinkRecord[]> {
    const table = await this.table();
    const records: ConsentLinkRecord[] = [];
    const filter = odata`PartitionKey eq ${tenantId} and registeredAt eq ${registeredAt}`;
    for await (const entity of table.listEntities<LinkEntity>({ queryOptions: { filter } })) records.push(toRecord(entity));
    records.sort((a, b) => b.createdAt.localeCompare(a.createdAt) || a.linkId.localeCompare(b.linkId));
    return records.slice(0, LIST_LIMIT);
  }

  /** Revokes a link; revoking it again changes nothing. Undefined for a link this registration never issued. */
  async revoke(tenantId: string, linkId: string, registeredAt: string, by: LinkActor): Promise<ConsentLinkRecord | undefined> {
    for (let attempt = 0; ; attempt++) {
      const entity = await this.read(tenantId, linkId);
      if (!entity || entity.registeredAt !== registeredAt) return undefined;
      if (entity.revokedAt) return toRecord(entity);
      const change = { revokedAt: new Date(this.clock()).toISOString(), revokedBy: by.name.slice(0, 128) };
      try {
        await (await this.table()).updateEntity({ partitionKey: tenantId, rowKey: linkId, ...change }, "Merge", { etag: entity.etag });
        return toRecord({ ...entity, ...change });
      } catch (error) {
        if (!isConcurrencyConflict(error) || attempt >= 4) throw error;
      }
    }
  }

  /** Marks the link spent by a consent that connected the tenant. */
  async markUsed(tenantId: string, linkId: string): Promise<void> {
    await (await this.table()).updateEntity(
      { partitionKey: tenantId, rowKey: linkId, usedAt: new Date(this.clock()).toISOString() },
      "Merge",
    );
  }
}

/**
 * Whether a link may start (or finish) a sign-in for a tenant in `status`. A tenant waiting for
 * consent takes any live link of its registration; a connected tenant only a re-consent link the
 * operator asked for and nobody has used yet. Offboarded tenants are refused before this.
 */
export function linkRefusal(link: ConsentLinkRecord | undefined, status: string): LinkRefusal | undefined {
  if (!link) return "unknown_link";
  if (link.revokedAt) return "revoked";
  if (status === "pending_consent" || status === "reconsent_required") return undefined;
  if (link.purpose === "reconsent" && !link.usedAt) return undefined;
  return "spent";
}
