import { createHash, createHmac, randomBytes } from "node:crypto";
import { TABLES } from "../storage/names";
import type { Clock } from "../clock";
import { isConcurrencyConflict, type TableFactory } from "../state/tables";

export const SESSION_LIFETIME_MS = 15 * 60_000;
const PARTITION = "session";
const STATE_FORMAT = /^[A-Za-z0-9_-]{43}$/;

/**
 * The server-side half of one sign-in attempt. The table holds only a hash of `state`, the
 * tenant and the times: the PKCE verifier and nonce are derived from `state` with the signing
 * key, so reading the table gives an attacker nothing to redeem a stolen code with.
 */
export interface ConsentSession {
  state: string;
  tenantId: string;
  codeVerifier: string;
  codeChallenge: string;
  nonce: string;
}

export type SessionClaim =
  | { outcome: "claimed"; session: ConsentSession }
  | { outcome: "unknown" | "expired" | "replayed" };

interface SessionEntity {
  partitionKey: string;
  rowKey: string;
  tenantId: string;
  createdAt: string;
  expiresAt: string;
  usedAt: string;
}

const hashState = (state: string): string => createHash("sha256").update(state).digest("hex");

function derive(key: Buffer, state: string, tenantId: string): ConsentSession {
  const mac = (label: string) => createHmac("sha256", key).update(`${label}:${state}`).digest("base64url");
  const codeVerifier = mac("pkce-verifier");
  return {
    state,
    tenantId,
    codeVerifier,
    codeChallenge: createHash("sha256").update(codeVerifier).digest("base64url"),
    nonce: mac("oidc-nonce"),
  };
}

export class ConsentSessionStore {
  constructor(
    private readonly tables: TableFactory,
    private readonly clock: Clock,
  ) {}

  async begin(key: Buffer, tenantId: string): Promise<ConsentSession> {
    const state = randomBytes(32).toString("base64url");
    const now = this.clock();
    const table = await this.tables.open(TABLES.consentSessions);
    const entity: SessionEntity = {
      partitionKey: PARTITION,
      rowKey: hashState(state),
      tenantId,
      createdAt: new Date(now).toISOString(),
      expiresAt: new Date(now + SESSION_LIFETIME_MS).toISOString(),
      usedAt: "",
    };
    await table.createEntity(entity);
    return derive(key, state, tenantId);
  }

  /** Marks the session used (exactly once, even under concurrent callbacks) and returns it. */
  async claim(key: Buffer, state: string): Promise<SessionClaim> {
    if (!STATE_FORMAT.test(state)) return { outcome: "unknown" };
    const table = await this.tables.open(TABLES.consentSessions);
    let entity: SessionEntity & { etag: string };
    try {
      entity = await table.getEntity<SessionEntity>(PARTITION, hashState(state));
    } catch (error) {
      if ((error as { statusCode?: unknown }).statusCode === 404) return { outcome: "unknown" };
      throw error;
    }
    if (entity.usedAt) return { outcome: "replayed" };
    const now = this.clock();
    if (Date.parse(entity.expiresAt) <= now) return { outcome: "expired" };
    try {
      await table.updateEntity(
        { partitionKey: PARTITION, rowKey: entity.rowKey, usedAt: new Date(now).toISOString() },
        "Merge",
        { etag: entity.etag },
      );
    } catch (error) {
      if (isConcurrencyConflict(error)) return { outcome: "replayed" };
      throw error;
    }
    return { outcome: "claimed", session: derive(key, state, entity.tenantId) };
  }

  /** Deletes sessions that expired more than a day ago; returns how many. */
  async purgeExpired(): Promise<number> {
    const table = await this.tables.open(TABLES.consentSessions);
    const cutoff = new Date(this.clock() - 24 * 3600_000).toISOString();
    let purged = 0;
    for await (const entity of table.listEntities<SessionEntity>({
      queryOptions: { filter: `PartitionKey eq '${PARTITION}' and expiresAt lt '${cutoff}'`, select: ["rowKey"] },
    })) {
      if (!entity.rowKey) continue;
      await table.deleteEntity(PARTITION, entity.rowKey).catch(() => undefined);
      purged++;
    }
    return purged;
  }
}
