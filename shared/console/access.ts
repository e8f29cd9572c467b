/**
 * Who may use the operator console.
 *
 * In Azure the MSSP's staff sign in with Microsoft Entra ID through App Service built-in
 * authentication ("EasyAuth"). EasyAuth validates the sign-in and passes the signed-in user to the
 * app in the `x-ms-client-principal` header (base64 JSON: `auth_typ`, `claims[]`), stripping any
 * copy a client sent. That is only true when EasyAuth is on, which the platform tells the app with
 * WEBSITE_AUTH_ENABLED=True; without it anybody could send the header, so it is ignored.
 *
 * Signing in is not enough: the user must hold the app role `Console.Operator` (a `roles` claim).
 * EasyAuth with a single-tenant sign-in already limits the console to the MSSP's own directory,
 * but everybody in that directory could sign in; an app role assignment (Enterprise applications >
 * Users and groups) is how the MSSP picks who may register and offboard customers, and removing
 * the assignment takes the access away without touching the app.
 *
 * With no sign-in configured the console refuses to serve (503), except in the local sandbox
 * (LOCAL_DEV_SANDBOX=true, refused in Azure), which has no Entra ID to sign in with.
 */

export const OPERATOR_ROLE = "Console.Operator";

export interface Operator {
  /** Shown in the page header. */
  name: string;
  via: "easyauth" | "sandbox";
}

export type AccessDecision =
  | { kind: "allowed"; operator: Operator }
  /** Neither EasyAuth nor the sandbox: the console is not usable, say how to fix it. */
  | { kind: "not_configured" }
  /** EasyAuth is on but the request carries no (readable) principal: send the browser to sign in. */
  | { kind: "sign_in" }
  /** Signed in, but without the operator role (or not with Entra ID). */
  | { kind: "forbidden"; name: string; reason: "missing_role" | "not_entra_id" | "other_tenant" };

export interface HeaderReader {
  get(name: string): string | null;
}

interface Claim {
  typ: string;
  val: string;
}

export interface ClientPrincipal {
  authType: string;
  claims: Claim[];
  nameType?: string;
  roleType?: string;
}

/** EasyAuth's principal header is a few kilobytes at most; anything far larger is not one. */
const MAX_PRINCIPAL_HEADER = 64 * 1024;

export function decodeClientPrincipal(header: string | null): ClientPrincipal | undefined {
  if (!header || header.length > MAX_PRINCIPAL_HEADER) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(header, "base64").toString("utf8"));
  } catch {
    return undefined;
  }
  if (typeof parsed !== "object" || parsed === null) return undefined;
  const record = parsed as Record<string, unknown>;
  const authType = record["auth_typ"];
  const claims = record["claims"];
  if (typeof authType !== "string" || !Array.isArray(claims)) return undefined;
  const principal: ClientPrincipal = {
    authType,
    claims: claims.flatMap((claim: unknown): Claim[] => {
      if (typeof claim !== "object" || claim === null) return [];
      const { typ, val } = claim as Record<string, unknown>;
      return typeof typ === "string" && typeof val === "string" ? [{ typ, val }] : [];
    }),
  };
  if (typeof record["name_typ"] === "string") principal.nameType = record["name_typ"];
  if (typeof record["role_typ"] === "string") principal.roleType = record["role_typ"];
  return principal;
}

/** Every role in the principal: one `roles` claim per role, or (rarely) one claim holding a JSON array. */
export function rolesOf(principal: ClientPrincipal): string[] {
  const types = new Set(["roles", ...(principal.roleType ? [principal.roleType] : [])]);
  return principal.claims.flatMap((claim) => {
    if (!types.has(claim.typ)) return [];
    if (claim.val.startsWith("[")) {
      try {
        const values: unknown = JSON.parse(claim.val);
        return Array.isArray(values) ? values.filter((v): v is string => typeof v === "string") : [];
      } catch {
        return [];
      }
    }
    return [claim.val];
  });
}

function nameOf(principal: ClientPrincipal, headers: HeaderReader): string {
  const claim = (typ: string | undefined) => (typ ? principal.claims.find((c) => c.typ === typ)?.val : undefined);
  const name =
    claim("name") ?? claim(principal.nameType) ?? claim("preferred_username") ?? headers.get("x-ms-client-principal-name") ?? "";
  return name.trim().slice(0, 128) || "Signed-in user";
}

/** Claim types that carry the signed-in user's tenant (v2 tokens say `tid`; App Service may expand it). */
const TENANT_CLAIMS = ["tid", "http://schemas.microsoft.com/identity/claims/tenantid"];

export function decideAccess(
  settings: { easyAuthEnabled: boolean; sandbox: boolean; msspTenantId: string },
  headers: HeaderReader,
): AccessDecision {
  if (settings.easyAuthEnabled) {
    const principal = decodeClientPrincipal(headers.get("x-ms-client-principal"));
    if (!principal) return { kind: "sign_in" };
    const name = nameOf(principal, headers);
    // App roles are an Entra ID concept; another provider's sign-in cannot carry the assignment.
    if (principal.authType.toLowerCase() !== "aad") return { kind: "forbidden", name, reason: "not_entra_id" };
    // The app registration is multi-tenant: any customer's admin can assign the role in their own
    // tenant. The issuer configured in App Service should stop them; this does not rely on it.
    const tenant = principal.claims.find((c) => TENANT_CLAIMS.includes(c.typ))?.val?.toLowerCase();
    if (tenant !== settings.msspTenantId.toLowerCase()) return { kind: "forbidden", name, reason: "other_tenant" };
    if (!rolesOf(principal).includes(OPERATOR_ROLE)) return { kind: "forbidden", name, reason: "missing_role" };
    return { kind: "allowed", operator: { name, via: "easyauth" } };
  }
  if (settings.sandbox) return { kind: "allowed", operator: { name: "Sandbox operator", via: "sandbox" } };
  return { kind: "not_configured" };
}
