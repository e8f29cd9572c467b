import { randomBytes } from "node:crypto";
import type { SecretStore } from "./secretStore";

/**
 * One Key Vault secret per customer tenant, named from the tenant GUID. Its value is a small
 * JSON document: the newest persisted refresh token, when it was obtained, and the key that
 * encrypts the cached access token kept next to the pull checkpoint (so a fresh process does
 * not need a token call every cycle, while Table Storage never sees a usable token).
 */
export interface TenantTokenBundle {
  refreshToken: string;
  /** Epoch ms when this refresh token was issued by Entra ID. */
  refreshTokenObtainedAt: number;
  /** base64 AES-256 key for the access-token cache. */
  accessTokenKey: string;
  /**
   * Which consent this token descends from: `{epoch ms}-{random}`, new at every consent and
   * carried over by every rotation. A newer consent always wins over a rotation of an older one.
   */
  generation: string;
}

/** A fresh consent generation; generations compare by their leading time. */
export function newGeneration(now: number): string {
  return `${now}-${randomBytes(6).toString("hex")}`;
}

/** Bundles written before generations existed count as the oldest. */
const LEGACY_GENERATION = "0-legacy";

export function generationTime(generation: string): number {
  const at = Number(generation.split("-", 1)[0]);
  return Number.isFinite(at) ? at : 0;
}

export const TENANT_TOKEN_CONTENT_TYPE = "application/vnd.mssp.tenant-token+json";

export const tenantTokenSecretName = (tenantId: string): string => `tenant-token-${tenantId.toLowerCase()}`;

export function newAccessTokenKey(): string {
  return randomBytes(32).toString("base64");
}

export class TenantTokenStore {
  constructor(private readonly secrets: SecretStore) {}

  async read(tenantId: string): Promise<TenantTokenBundle | undefined> {
    const secret = await this.secrets.get(tenantTokenSecretName(tenantId));
    if (!secret) return undefined;
    try {
      const parsed = JSON.parse(secret.value) as Partial<TenantTokenBundle>;
      if (
        typeof parsed.refreshToken === "string" &&
        typeof parsed.refreshTokenObtainedAt === "number" &&
        typeof parsed.accessTokenKey === "string"
      ) {
        return {
          refreshToken: parsed.refreshToken,
          refreshTokenObtainedAt: parsed.refreshTokenObtainedAt,
          accessTokenKey: parsed.accessTokenKey,
          generation: typeof parsed.generation === "string" && parsed.generation ? parsed.generation : LEGACY_GENERATION,
        };
      }
    } catch {
      // fall through: an unreadable bundle is as good as none; the tenant must consent again.
    }
    return undefined;
  }

  async write(tenantId: string, bundle: TenantTokenBundle, options: { existingOnly?: boolean } = {}): Promise<void> {
    await this.secrets.set(tenantTokenSecretName(tenantId), JSON.stringify(bundle), {
      ...options,
      contentType: TENANT_TOKEN_CONTENT_TYPE,
      tags: {
        tenantId: tenantId.toLowerCase(),
        kind: "defender-delegated-refresh-token",
        obtainedAt: new Date(bundle.refreshTokenObtainedAt).toISOString(),
        generation: bundle.generation,
      },
    });
  }

  /**
   * Writes a rotated refresh token unless a newer consent is stored, and makes sure a consent
   * that lands between the check and the write still wins: Key Vault has no conditional write,
   * so after writing, the version history is read and a newer consent's bundle is put back on
   * top. Returns the bundle that is current afterwards. A rotation never creates or recovers the
   * secret: one deleted meanwhile (offboarding, a move to the application model) stays deleted.
   */
  async writeRotation(tenantId: string, next: TenantTokenBundle): Promise<TenantTokenBundle> {
    const name = tenantTokenSecretName(tenantId);
    const stored = await this.read(tenantId);
    if (!stored) return next;
    if (generationTime(stored.generation) > generationTime(next.generation)) return stored;
    await this.write(tenantId, next, { existingOnly: true });
    const versions = await this.secrets.versions(name);
    const newest = versions.reduce<(typeof versions)[number] | undefined>((best, version) => {
      const generation = version.tags["generation"] ?? LEGACY_GENERATION;
      if (generationTime(generation) <= generationTime(next.generation)) return best;
      return !best || generationTime(generation) >= generationTime(best.tags["generation"] ?? LEGACY_GENERATION) ? version : best;
    }, undefined);
    if (!newest) return next;
    const current = await this.read(tenantId);
    const newestGeneration = newest.tags["generation"] ?? LEGACY_GENERATION;
    // The newer consent is on top already (it landed after our write): nothing to repair.
    if (current && generationTime(current.generation) >= generationTime(newestGeneration)) return current;
    const consent = await this.secrets.getVersion(name, newest.version);
    if (consent === undefined) return current ?? next;
    await this.secrets.set(name, consent, {
      contentType: TENANT_TOKEN_CONTENT_TYPE,
      tags: { ...newest.tags },
      existingOnly: true,
    });
    return (await this.read(tenantId)) ?? next;
  }

  async remove(tenantId: string): Promise<void> {
    await this.secrets.delete(tenantTokenSecretName(tenantId));
  }
}
