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
  /** The consent model the consent is for, when the link moves the tenant to another model. */
  consentModel?: string;
  createdAt: string;
  expiresAt: string;
  issuedBy: string;
  usedAt?: string;
  revokedAt?: string;
  revokedBy?: string;
}

/** Why a link may not start a sign-in (or finish one). */
export type LinkRefusal = "unknown_link" | "revoked" | "spent" | "in_use";

interface LinkEntity {
  partitionKey: string;
  rowKey: string;
  registeredAt: string;
  purpose: string;
  source: string;
  /** Absent on links issued before consent models existed. */
  consentModel?: string;
  createdAt: string;
  expiresAt: string;
  issuedBy: string;
  usedAt: string;
  revokedAt: string;
  revokedBy: string;
  /** The sign-in (a hash of its state) finishing through the link right now, and since when. */
  claimedBy?: string;
  claimedAt?: string;
}

/** A claim older than a sign-in can live is a callback that died: it no longer holds the link. */
const CLAIM_LIFETIME_MS = 15 * 60_000;

/** Links listed per tenant: the newest this many (a tenant with more has had a very long life). */
const LIST_LIMIT = 200;

function toRecord(entity: LinkEntity): ConsentLinkRecord {
  return {
    linkId: entity.rowKey,
    tenantId: entity.partitionKey,
    purpose: entity.purpose === "reconsent" ? "reconsent" : "registration",
    ...(entity.source ? { source: entity.source } : {}),
    ...(entity.consentModel ? { consentModel: entity.consentModel } : {}),
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
    consentModel?: string;
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
      consentModel: input.consentModel ?? "",
      createdAt: new Date(now).toISOString(),
      expiresAt: new Date(expiresAtMs).toISOString(),
      issuedBy: input.issuedBy.name.slice(0, 128),
      usedAt: "",
      revokedAt: "",
      // Stryker disable next-line StringLiteral: read only beside revokedAt (toRecord), and revoke writes both
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

  /**
   * Takes the link for one finishing sign-in (`claimant`, a hash of its state), so two callbacks
   * through one link cannot both replace the consent: the read, the check and the write are one
   * ETag-guarded step. Refused while another live callback holds it, or when the link may not be
   * used for the tenant as it is now.
   */
  async claim(
    tenantId: string,
    linkId: string,
    tenant: { createdAt: string; status: string; consentedAt?: string },
    claimant: string,
  ): Promise<LinkRefusal | undefined> {
    for (let attempt = 0; ; attempt++) {
      const entity = await this.read(tenantId, linkId);
      const link = entity && entity.registeredAt === tenant.createdAt ? toRecord(entity) : undefined;
      const refusal = linkRefusal(link, tenant);
      // Stryker disable next-line StringLiteral: linkRefusal answers "unknown_link" itself whenever the entity is missing, so the fallback is never used
      if (refusal || !entity) return refusal ?? "unknown_link";
      const now = this.clock();
      // Stryker disable next-line StringLiteral: claimedAt is written with claimedBy; any fallback text parses as NaN, which holds nothing
      const held = entity.claimedBy && entity.claimedBy !== claimant && now - Date.parse(entity.claimedAt ?? "") < CLAIM_LIFETIME_MS;
      if (held) return "in_use";
      try {
        await (await this.table()).updateEntity(
          { partitionKey: tenantId, rowKey: linkId, claimedBy: claimant, claimedAt: new Date(now).toISOString() },
          "Merge",
          { etag: entity.etag },
        );
        return undefined;
      } catch (error) {
        if (!isConcurrencyConflict(error) || attempt >= 4) throw error;
      }
    }
  }

  /** Gives the link back when the sign-in holding it did not connect the tenant (declined, failed). */
  async release(tenantId: string, linkId: string, claimant: string): Promise<void> {
    const entity = await this.read(tenantId, linkId);
    if (!entity || entity.claimedBy !== claimant) return;
    await (await this.table())
      .updateEntity({ partitionKey: tenantId, rowKey: linkId, claimedBy: "", claimedAt: "" }, "Merge", { etag: entity.etag })
      .catch((error: unknown) => {
        // Someone else wrote meanwhile (a revocation): their write stands, the claim lapses on its own.
        if (!isConcurrencyConflict(error)) throw error;
      });
  }

  /** Whether the link was revoked since it was claimed (read again just before the consent is stored). */
  async revokedSince(tenantId: string, linkId: string): Promise<boolean> {
    const entity = await this.read(tenantId, linkId);
    return !entity || Boolean(entity.revokedAt);
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
 * Whether a link may start (or finish) a sign-in for the tenant as it is now. A link that once
 * connected the tenant is spent for good. A tenant waiting for consent takes any other live link
 * of its registration; a connected tenant only a re-consent link the operator asked for after the
 * current consent (an older one was superseded by that consent). Offboarded tenants are refused
 * before this.
 */
export function linkRefusal(link: ConsentLinkRecord | undefined, tenant: { status: string; consentedAt?: string }): LinkRefusal | undefined {
  if (!link) return "unknown_link";
  if (link.revokedAt) return "revoked";
  if (link.usedAt) return "spent";
  if (tenant.status === "pending_consent" || tenant.status === "reconsent_required") return undefined;
  if (link.purpose === "reconsent" && (!tenant.consentedAt || link.createdAt > tenant.consentedAt)) return undefined;
  return "spent";
}
