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
        };
      }
    } catch {
      // fall through: an unreadable bundle is as good as none; the tenant must consent again.
    }
    return undefined;
  }

  async write(tenantId: string, bundle: TenantTokenBundle): Promise<void> {
    await this.secrets.set(tenantTokenSecretName(tenantId), JSON.stringify(bundle), {
      contentType: TENANT_TOKEN_CONTENT_TYPE,
      tags: {
        tenantId: tenantId.toLowerCase(),
        kind: "defender-delegated-refresh-token",
        obtainedAt: new Date(bundle.refreshTokenObtainedAt).toISOString(),
      },
    });
  }

  async remove(tenantId: string): Promise<void> {
    await this.secrets.delete(tenantTokenSecretName(tenantId));
  }
}
