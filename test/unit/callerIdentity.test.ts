import { webcrypto } from "node:crypto";
import { exportJWK, generateKeyPair, SignJWT, type JWK } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../shared/config";
import { AppError } from "../../shared/errors";
import type { HttpClient } from "../../shared/http/httpClient";
import { identifyOperator, OperatorIdentityError, OperatorTokenVerifier, type OperatorIdentityDeps } from "../../shared/operator/callerIdentity";

type CryptoKey = webcrypto.CryptoKey;

/** The operator's identity without the app around it: settings, key caching, outages, names. */

const AUTHORITY = "https://login.example.test";
const CLIENT_ID = "6c3a9f0e-1d2b-4c5a-8e7f-9a0b1c2d3e4f";
const TENANT = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
const APP_ID = "11111111-2222-4333-8444-555555555555";
const NOW = Date.parse("2026-11-30T12:00:00Z");
const nowS = Math.floor(NOW / 1000);

let signing: { privateKey: CryptoKey; jwk: JWK };
let keyFetches = 0;
let keysAnswer: () => { status: number; body: string } = () => ({ status: 200, body: JSON.stringify({ keys: [signing.jwk] }) });
let clock = NOW;

const http: HttpClient = {
  async send(url) {
    keyFetches++;
    expect(url).toBe(`${AUTHORITY}/${TENANT}/discovery/v2.0/keys`);
    return { headers: {}, ...keysAnswer() };
  },
};

beforeAll(async () => {
  const pair = await generateKeyPair("RS256");
  signing = { privateKey: pair.privateKey, jwk: { ...(await exportJWK(pair.publicKey)), kid: "k1", alg: "RS256", use: "sig" } };
});

function verifier(): OperatorTokenVerifier {
  return new OperatorTokenVerifier({ http, clock: () => clock, authorityHost: AUTHORITY, clientId: CLIENT_ID, msspTenantId: TENANT });
}

async function token(overrides: Record<string, unknown> = {}, kid = "k1"): Promise<string> {
  const claims: Record<string, unknown> = {
    aud: `api://${CLIENT_ID}`,
    iss: `https://sts.windows.net/${TENANT}/`,
    iat: nowS - 10,
    nbf: nowS - 10,
    exp: nowS + 3600,
    tid: TENANT,
    appid: APP_ID,
    oid: "99999999-8888-4777-8666-555555555555",
    sub: "99999999-8888-4777-8666-555555555555",
    roles: ["Console.Operator"],
    ver: "1.0",
  };
  for (const [key, value] of Object.entries(overrides)) {
    if (value === undefined) delete claims[key];
    else claims[key] = value;
  }
  return new SignJWT(claims).setProtectedHeader({ alg: "RS256", kid }).sign(signing.privateKey);
}

const headers = (values: Record<string, string>) => ({ get: (name: string) => values[name.toLowerCase()] ?? null });

function deps(config: Partial<OperatorIdentityDeps["config"]> = {}): OperatorIdentityDeps {
  return {
    config: { easyAuthEnabled: false, msspTenantId: TENANT, operatorRequireEntra: false, localDev: {}, ...config },
    tokens: verifier(),
  };
}

async function refusal(promise: Promise<unknown>): Promise<OperatorIdentityError> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(OperatorIdentityError);
  return error as OperatorIdentityError;
}

describe("OPERATOR_REQUIRE_ENTRA", () => {
  const REQUIRED = {
    MSSP_CLIENT_ID: CLIENT_ID,
    MSSP_CLIENT_SECRET: "not-a-real-secret",
    MSSP_TENANT_ID: TENANT,
    MSSP_PUBLIC_BASE_URL: "https://mssp.example",
    KEY_VAULT_URL: "https://kv.vault.azure.net/",
    AzureWebJobsStorage: "UseDevelopmentStorage=true",
  };

  it("is false unless set to true, and refused when not a boolean", () => {
    expect(loadConfig(REQUIRED).operatorRequireEntra).toBe(false);
    expect(loadConfig({ ...REQUIRED, OPERATOR_REQUIRE_ENTRA: "true" }).operatorRequireEntra).toBe(true);
    expect(() => loadConfig({ ...REQUIRED, OPERATOR_REQUIRE_ENTRA: "always" })).toThrow(/OPERATOR_REQUIRE_ENTRA must be true or false/);
  });
});

describe("identifyOperator", () => {
  it("names the sandbox operator in the local sandbox, even with OPERATOR_REQUIRE_ENTRA", async () => {
    expect(await identifyOperator(headers({}), deps({ localDev: { sandbox: true }, operatorRequireEntra: true }))).toEqual({
      kind: "sandbox",
      id: "sandbox",
      name: "Sandbox operator",
    });
  });

  it("ignores a principal header while App Service authentication is off (anyone could send it)", async () => {
    const forged = Buffer.from(JSON.stringify({ auth_typ: "aad", claims: [{ typ: "tid", val: TENANT }, { typ: "roles", val: "Console.Operator" }] })).toString("base64");
    expect((await identifyOperator(headers({ "x-ms-client-principal": forged }), deps())).kind).toBe("function_key");
    const required = await refusal(identifyOperator(headers({ "x-ms-client-principal": forged }), deps({ operatorRequireEntra: true })));
    expect([required.status, required.code]).toEqual([401, "operator_identity_required"]);
  });

  it("refuses an empty or malformed Bearer header rather than falling back to the function key", async () => {
    for (const value of ["Bearer", "Bearer  a b", "bearer <script>"]) {
      const error = await refusal(identifyOperator(headers({ authorization: value }), deps()));
      expect([error.status, error.code], value).toEqual([401, "invalid_operator_token"]);
    }
    expect((await identifyOperator(headers({ authorization: "Basic dXNlcjpwdw==" }), deps())).kind).toBe("function_key");
  });

  it("refuses a non-Entra App Service sign-in with 403 (not_entra_id)", async () => {
    const github = Buffer.from(JSON.stringify({ auth_typ: "github", claims: [{ typ: "roles", val: "Console.Operator" }] })).toString("base64");
    const error = await refusal(identifyOperator(headers({ "x-ms-client-principal": github }), deps({ easyAuthEnabled: true })));
    expect([error.status, error.code, error.reason]).toEqual([403, "operator_forbidden", "not_entra_id"]);
  });
});

describe("OperatorTokenVerifier", () => {
  it("fetches the signing keys once and reuses them for an hour", async () => {
    clock = NOW;
    keyFetches = 0;
    const tokens = verifier();
    expect(await tokens.verify(await token())).toEqual({ kind: "entra_app", id: APP_ID, name: `Application ${APP_ID}` });
    await tokens.verify(await token());
    expect(keyFetches).toBe(1);
    clock = NOW + 63 * 60_000;
    await expect(tokens.verify(await token())).rejects.toMatchObject({ reason: "expired" });
    expect(keyFetches).toBe(2);
    clock = NOW;
  });

  it("refetches the keys for an unknown key id, but at most every five minutes", async () => {
    clock = NOW;
    keyFetches = 0;
    const tokens = verifier();
    await tokens.verify(await token());
    await expect(tokens.verify(await token({}, "rotated"))).rejects.toMatchObject({ reason: "invalid_signature" });
    await expect(tokens.verify(await token({}, "rotated"))).rejects.toMatchObject({ reason: "invalid_signature" });
    expect(keyFetches).toBe(1);
    clock = NOW + 6 * 60_000;
    await expect(tokens.verify(await token({}, "rotated"))).rejects.toMatchObject({ reason: "invalid_signature" });
    expect(keyFetches).toBe(2);
    clock = NOW;
  });

  it("answers 503 signing_keys_unavailable when Entra ID's keys cannot be read", async () => {
    keysAnswer = () => ({ status: 500, body: "" });
    try {
      const error = await verifier()
        .verify(await token())
        .then(() => undefined, (caught: unknown) => caught);
      expect(error).toBeInstanceOf(AppError);
      expect(error).toMatchObject({ status: 503, code: "signing_keys_unavailable" });
    } finally {
      keysAnswer = () => ({ status: 200, body: JSON.stringify({ keys: [signing.jwk] }) });
    }
  });

  it("keeps verifying with the keys it last read while Entra ID cannot serve them, once its cache has expired", async () => {
    clock = NOW;
    const tokens = verifier();
    await tokens.verify(await token());
    keysAnswer = () => ({ status: 503, body: "" });
    try {
      clock = NOW + 61 * 60_000;
      expect(await tokens.verify(await token({ exp: Math.floor(clock / 1000) + 600, iat: Math.floor(clock / 1000) }))).toMatchObject({ kind: "entra_app" });
    } finally {
      keysAnswer = () => ({ status: 200, body: JSON.stringify({ keys: [signing.jwk] }) });
      clock = NOW;
    }
  });

  it("names a user by object id and a trimmed name of at most 128 characters", async () => {
    const oid = "12345678-1234-4234-8234-123456789012";
    const user = await token({ scp: "access_as_user", oid, sub: "pairwise-subject", name: ` ${"N".repeat(200)} `, idtyp: undefined });
    expect(await verifier().verify(user)).toEqual({ kind: "entra_user", id: oid, name: "N".repeat(128) });
  });

  it("accepts the v2.0 issuer with the client id as audience, and refuses a v2.0 issuer of another authority", async () => {
    const v2 = { aud: CLIENT_ID, iss: `${AUTHORITY}/${TENANT}/v2.0`, appid: undefined, azp: APP_ID, ver: "2.0" };
    expect((await verifier().verify(await token(v2))).id).toBe(APP_ID);
    await expect(verifier().verify(await token({ ...v2, iss: `https://login.microsoftonline.com/${TENANT}/v2.0` }))).rejects.toMatchObject({
      status: 401,
      reason: "wrong_issuer",
    });
  });
});
