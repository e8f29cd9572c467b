import { randomBytes } from "node:crypto";
import type { Clock } from "../clock";
import type { SecretStore } from "../secrets/secretStore";

export const SIGNING_KEY_SECRET_NAME = "consent-link-signing-key";
const CACHE_MS = 10 * 60_000;

/**
 * The HMAC key behind consent links and PKCE derivation. It lives in Key Vault; the first
 * instance that needs it generates it. Two instances racing on that first write both adopt the
 * oldest version, so they never sign with different keys.
 */
export class SigningKeyProvider {
  private cached: { key: Buffer; until: number } | undefined;
  private loading: Promise<Buffer> | undefined;

  constructor(
    private readonly secrets: SecretStore,
    private readonly clock: Clock,
  ) {}

  async get(): Promise<Buffer> {
    if (this.cached && this.cached.until > this.clock()) return this.cached.key;
    this.loading ??= this.load().finally(() => {
      this.loading = undefined;
    });
    return this.loading;
  }

  private async load(): Promise<Buffer> {
    // Always the oldest enabled version: every instance, racing or late, lands on the same key.
    let value = await this.secrets.getOldest(SIGNING_KEY_SECRET_NAME);
    if (value === undefined) {
      await this.secrets.set(SIGNING_KEY_SECRET_NAME, randomBytes(32).toString("base64"), {
        contentType: "application/vnd.mssp.hmac-key",
        tags: { purpose: "consent-link-signing" },
      });
      value = await this.secrets.getOldest(SIGNING_KEY_SECRET_NAME);
    }
    const key = value === undefined ? undefined : Buffer.from(value, "base64");
    if (!key || key.length < 32) throw new Error("consent link signing key in Key Vault is missing or shorter than 32 bytes");
    this.cached = { key, until: this.clock() + CACHE_MS };
    return key;
  }
}
