/**
 * infra/register-app.sh: syntax, argument handling, dry run, and a full run against a fake `az`
 * that proves the client secret reaches Key Vault intact and is never printed or put on a
 * command line.
 */
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { INFRA_DIR, readBicep } from "./bicepText";

const SCRIPT = path.join(INFRA_DIR, "register-app.sh");
const source = readFileSync(SCRIPT, "utf8");
const workDir = mkdtempSync(path.join(tmpdir(), "register-app-test-"));
afterAll(() => rmSync(workDir, { recursive: true, force: true }));

const TENANT = "72f988bf-0000-4000-8000-00000000000a";
const APP_ID = "11111111-2222-4333-8444-555555555555";
const SCOPE_ID = "99999999-8888-4777-8666-555555555555";
/** The id the fake returns for an application permission (app role) lookup. */
const ROLE_ID = "77777777-6666-4555-8444-333333333333";
/** The function app's user-assigned identity (MANAGED_IDENTITY_PRINCIPAL_ID). */
const PRINCIPAL_ID = "44444444-3333-4222-8111-000000000000";
const CALLBACK = "https://mssp-func-abc.azurewebsites.net/api/consent/callback";
/** App Service authentication's callback on the same host: staff sign in to the console there. */
const CONSOLE_CALLBACK = "https://mssp-func-abc.azurewebsites.net/.auth/login/aad/callback";
const SECRET = "fake-secret_value~with.chars-0123"; // deliberately not in the real Entra secret format

/**
 * A fake `az` on PATH. It appends each invocation's arguments (one line, NUL-free) to $FAKE_AZ_LOG,
 * answers the lookups register-app.sh makes, and stores stdin of `keyvault secret set` in
 * $FAKE_AZ_VAULT. FAKE_AZ_EXISTING=1 simulates a second run (app, redirect URI and permission exist);
 * FAKE_AZ_ROLE_USERS_ONLY=1 with it, a console role created by an earlier version (users only).
 * FAKE_AZ_CREDENTIAL is the deployment's MSSP_CLIENT_CREDENTIAL output (unset: none, as in an
 * earlier version); FAKE_AZ_FIC is what `federated-credential list` answers (issuer, subject and
 * audiences, tab-separated).
 */
const FAKE_AZ = `#!/usr/bin/env bash
printf '%s\\n' "$*" >>"$FAKE_AZ_LOG"
args="$*"
case "$args" in
  "account show"*) echo "${TENANT}" ;;
  "deployment group show"*CONSENT_CALLBACK_URL*) echo "${CALLBACK}" ;;
  "deployment group show"*FUNCTION_APP_NAME*) echo "mssp-func-abc" ;;
  "deployment group show"*KEY_VAULT_NAME*) echo "kv-mssp-abc" ;;
  "deployment group show"*CREDENTIAL_VAULT_NAME*) echo "kvc-mssp-abc" ;;
  "deployment group show"*MSSP_TENANT_ID*) echo "${TENANT}" ;;
  "deployment group show"*MSSP_CLIENT_CREDENTIAL*) echo "\${FAKE_AZ_CREDENTIAL:-}" ;;
  "deployment group show"*MSSP_CLIENT_CERTIFICATE_NAME*) if [[ "\${FAKE_AZ_CREDENTIAL:-}" == certificate ]]; then echo "mssp-client-certificate"; fi ;;
  "deployment group show"*MANAGED_IDENTITY_PRINCIPAL_ID*) echo "${PRINCIPAL_ID}" ;;
  "ad app federated-credential list"*) if [[ -n "\${FAKE_AZ_FIC:-}" ]]; then printf '%s\\n' "\$FAKE_AZ_FIC"; fi ;;
  "ad app list"*) if [[ "\${FAKE_AZ_EXISTING:-}" == 1 ]]; then echo "${APP_ID}"; fi ;;
  "ad app create"*) echo "${APP_ID}" ;;
  "ad app show"*web.redirectUris*)
    if [[ "\${FAKE_AZ_EXISTING:-}" == 1 ]]; then printf '%s\\n' "http://localhost:7071/api/consent/callback" "${CALLBACK}"; fi ;;
  "ad app show"*appRoles*)
    if [[ "\${FAKE_AZ_ROLE_USERS_ONLY:-}" == 1 ]]; then echo "User";
    elif [[ "\${FAKE_AZ_EXISTING:-}" == 1 ]]; then printf '%s\\n' "User" "Application"; fi ;;
  "ad app show"*requiredResourceAccess*) if [[ "\${FAKE_AZ_EXISTING:-}" == 1 ]]; then echo "${SCOPE_ID}"; fi ;;
  "ad app show"*) echo "${APP_ID}" ;;
  "ad sp list"*) if [[ "\${FAKE_AZ_EXISTING:-}" == 1 ]]; then echo "sp-object-id"; fi ;;
  "ad sp show"*appRoles*) echo "${ROLE_ID}" ;;
  "ad sp show"*) echo "${SCOPE_ID}" ;;
  "ad app credential reset"*) echo "${SECRET}" ;;
  "keyvault secret set"*) cat >"$FAKE_AZ_VAULT" ;;
  *) ;;
esac
exit 0
`;

/** A fake `az` that must never be called. */
const FORBIDDEN_AZ = `#!/usr/bin/env bash
printf '%s\\n' "$*" >>"$FAKE_AZ_LOG"
exit 99
`;

function fakeAzDir(name: string, script: string): string {
  const dir = path.join(workDir, name);
  spawnSync("mkdir", ["-p", dir]);
  const az = path.join(dir, "az");
  writeFileSync(az, script);
  chmodSync(az, 0o755);
  return dir;
}

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
  azCalls: string[];
  vault: string | undefined;
}

let runCounter = 0;
function run(args: string[], options: { az?: string; env?: Record<string, string> } = {}): Run {
  runCounter += 1;
  const log = path.join(workDir, `az-${runCounter}.log`);
  const vault = path.join(workDir, `vault-${runCounter}.txt`);
  const dir = fakeAzDir(`bin-${runCounter}`, options.az ?? FORBIDDEN_AZ);
  const result = spawnSync("bash", [SCRIPT, ...args], {
    encoding: "utf8",
    timeout: 30_000,
    env: { ...process.env, PATH: `${dir}${path.delimiter}${process.env["PATH"] ?? ""}`, FAKE_AZ_LOG: log, FAKE_AZ_VAULT: vault, ...options.env },
  });
  return {
    status: result.status,
    stdout: result.stdout,
    stderr: result.stderr,
    azCalls: existsSync(log) ? readFileSync(log, "utf8").split("\n").filter(Boolean) : [],
    vault: existsSync(vault) ? readFileSync(vault, "utf8") : undefined,
  };
}

describe("register-app.sh hygiene", () => {
  it("passes bash -n", () => {
    const result = spawnSync("bash", ["-n", SCRIPT], { encoding: "utf8" });
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
  });

  it("runs with set -euo pipefail and never enables tracing", () => {
    expect(source).toMatch(/^set -euo pipefail$/m);
    expect(source).not.toMatch(/set\s+-[a-z]*x/);
    expect(source).not.toMatch(/set\s+-o\s+xtrace/);
    expect(source.split("\n")[0]).toBe("#!/usr/bin/env bash");
  });

  it("never passes the secret as an argument or echoes it", () => {
    expect(source).not.toMatch(/secret set[^\n]*--value/);
    expect(source).toMatch(/--file \/dev\/stdin/);
    expect(source).toMatch(/credential reset[\s\S]*--query password --output tsv/);
  });

  it("stores the secret under the name the Bicep Key Vault reference uses", () => {
    const name = /^readonly SECRET_NAME='([^']+)'/m.exec(source)?.[1];
    expect(name).toBe("mssp-client-secret");
    expect(readBicep("modules/functionapp.bicep").code).toContain(`SecretName=${name})'`);
  });

  it("reads only deployment outputs that main.bicep declares", () => {
    const declared = new Set([...readBicep("main.bicep").code.matchAll(/^output (\w+) /gm)].map((m) => m[1]));
    const used = [
      ...[...source.matchAll(/(?:deployment|optional)_output (\w+)/g)].map((m) => m[1]),
      ...[...source.matchAll(/properties\.outputs\.([A-Z_]+)\./g)].map((m) => m[1]),
    ];
    expect(used.length).toBeGreaterThan(3);
    for (const name of used) expect(declared.has(name), name).toBe(true);
  });
});

describe("register-app.sh arguments (no az call)", () => {
  it("--help explains every step and exits 0", () => {
    const result = run(["--help"]);
    expect(result.status).toBe(0);
    for (const text of ["AzureADMultipleOrgs", "CONSENT_CALLBACK_URL", "Alert.Read", "mssp-client-secret", "MSSP_CLIENT_ID", "--dry-run"]) {
      expect(result.stdout).toContain(text);
    }
    expect(result.azCalls).toEqual([]);
  });

  it("refuses to run without arguments (exit 2, clear message)", () => {
    const result = run([]);
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/missing required argument --resource-group/);
    expect(result.azCalls).toEqual([]);
  });

  it("rejects unknown arguments, options without values and a malformed --app-id (exit 2)", () => {
    for (const args of [
      ["--bogus"],
      ["-g"],
      ["-g", "--dry-run"],
      ["-g", "rg", "--app-id", "nope"],
      ["-g", "rg", "--secret-years", "0"],
      ["-g", "rg", "--credential", "password"],
      ["-g", "rg", "--identity-principal-id", "nope"],
      ["-g", "rg", "--mssp-tenant-id", "nope"],
      ["-g", "rg", "--certificate-name", "has space"],
      ["-g", "rg", "--certificate-months", "0"],
    ]) {
      const result = run(args);
      expect(result.status, args.join(" ")).toBe(2);
      expect(result.azCalls).toEqual([]);
    }
  });

  it("--dry-run prints the az commands and calls none", () => {
    const result = run(["-g", "rg-mssp", "--dry-run", "--credential", "secret"]);
    expect(result.status).toBe(0);
    expect(result.azCalls).toEqual([]);
    const out = result.stdout;
    expect(out).toContain("+ az deployment group show --resource-group rg-mssp --name main --query properties.outputs.CONSENT_CALLBACK_URL.value");
    expect(out).toMatch(/\+ az ad app create --display-name 'MSSP Defender Connector' --sign-in-audience AzureADMultipleOrgs --web-redirect-uris/);
    expect(out).toContain(`+ az ad sp show --id fc780465-2017-40d4-a0c5-307022471b92 --query "oauth2PermissionScopes[?value=='Alert.Read'].id | [0]"`);
    expect(out).toMatch(/\+ az ad app permission add --id '<APP_ID>' --api fc780465-2017-40d4-a0c5-307022471b92 --api-permissions '<ALERT_READ_SCOPE_ID>=Scope'/);
    // The Graph source's delegated permission, looked up the same way.
    expect(out).toContain(`+ az ad sp show --id 00000003-0000-0000-c000-000000000000 --query "oauth2PermissionScopes[?value=='SecurityAlert.Read.All'].id | [0]"`);
    expect(out).toMatch(/\+ az ad app permission add --id '<APP_ID>' --api 00000003-0000-0000-c000-000000000000 --api-permissions '<SECURITY_ALERT_READ_ALL_SCOPE_ID>=Scope'/);
    expect(out).toMatch(/\+ az ad app credential reset [^\n]*--append[^\n]*--query password --output tsv\n {2}\| tr -d '\\r\\n' \|\n\+ az keyvault secret set [^\n]*--name mssp-client-secret --file \/dev\/stdin/);
    expect(out).toContain("+ az functionapp config appsettings set --resource-group rg-mssp --name '<FUNCTION_APP_NAME>' --settings 'MSSP_CLIENT_ID=<APP_ID>'");
  });
});

describe("register-app.sh against a fake az", () => {
  it("first run: creates the registration, stores the secret without printing it, sets MSSP_CLIENT_ID", () => {
    const result = run(["-g", "rg-mssp"], { az: FAKE_AZ });
    expect(result.stderr).not.toContain(SECRET);
    expect(result.status, result.stderr).toBe(0);
    expect(result.vault).toBe(SECRET); // intact, without the newline -o tsv adds
    expect(result.stdout).not.toContain(SECRET);
    expect(result.stderr).not.toContain(SECRET);
    expect(result.azCalls.join("\n")).not.toContain(SECRET);
    const calls = result.azCalls;
    expect(calls).toContain(
      `ad app create --display-name MSSP Defender Connector --sign-in-audience AzureADMultipleOrgs --web-redirect-uris ${CALLBACK} ${CONSOLE_CALLBACK} --query appId --output tsv`,
    );
    expect(calls).toContain(`ad sp create --id ${APP_ID} --output none`);
    // The console's app role, added once with a fixed id.
    const roleCall = calls.find((c) => c.startsWith(`ad app update --id ${APP_ID} --app-roles `));
    expect(JSON.parse(roleCall?.slice(`ad app update --id ${APP_ID} --app-roles `.length) ?? "[]")).toEqual([
      expect.objectContaining({
        value: "Console.Operator",
        allowedMemberTypes: ["User", "Application"],
        isEnabled: true,
        id: "5b0f0c1e-4f3a-4b8e-9a7d-2c6e1f0a9b31",
      }),
    ]);
    expect(calls).toContain(`ad app permission add --id ${APP_ID} --api fc780465-2017-40d4-a0c5-307022471b92 --api-permissions ${SCOPE_ID}=Scope --output none`);
    expect(calls.some((c) => c.startsWith(`ad app credential reset --id ${APP_ID} --append `))).toBe(true);
    // the credential vault, never the tokens vault (KEY_VAULT_NAME)
    expect(calls).toContain("keyvault secret set --vault-name kvc-mssp-abc --name mssp-client-secret --file /dev/stdin --content-type text/plain --output none");
    expect(calls.some((c) => c.includes("KEY_VAULT_NAME") || c.includes("kv-mssp-abc"))).toBe(false);
    expect(calls.at(-1)).toBe(`functionapp config appsettings set --resource-group rg-mssp --name mssp-func-abc --settings MSSP_CLIENT_ID=${APP_ID} --output none`);
    // the secret is stored before the app setting change restarts the app (which re-reads the reference)
    const secretSet = calls.findIndex((c) => c.startsWith("keyvault secret set"));
    const settingSet = calls.findIndex((c) => c.startsWith("functionapp config appsettings set"));
    expect(secretSet).toBeLessThan(settingSet);
    expect(result.stdout).toContain(`-p clientId=${APP_ID}`);
  });

  it("second run: updates in place, keeps other redirect URIs, does not re-add the permission", () => {
    const result = run(["-g", "rg-mssp", "--skip-secret"], { az: FAKE_AZ, env: { FAKE_AZ_EXISTING: "1" } });
    expect(result.status, result.stderr).toBe(0);
    const calls = result.azCalls;
    expect(calls.some((c) => c.startsWith("ad app create"))).toBe(false);
    expect(calls).toContain(
      `ad app update --id ${APP_ID} --sign-in-audience AzureADMultipleOrgs --web-redirect-uris http://localhost:7071/api/consent/callback ${CALLBACK} ${CONSOLE_CALLBACK}`,
    );
    expect(calls.some((c) => c.startsWith("ad app permission add"))).toBe(false);
    expect(calls.some((c) => c.startsWith("ad sp create"))).toBe(false);
    expect(calls.some((c) => c.includes("--app-roles"))).toBe(false);
    expect(calls.some((c) => c.startsWith("ad app credential reset"))).toBe(false);
    expect(result.vault).toBeUndefined();
  });

  it("lets applications into a Console.Operator role that admits only users, keeping its id", () => {
    const result = run(["-g", "rg-mssp", "--skip-secret"], { az: FAKE_AZ, env: { FAKE_AZ_EXISTING: "1", FAKE_AZ_ROLE_USERS_ONLY: "1" } });
    expect(result.status, result.stderr).toBe(0);
    const prefix = `ad app update --id ${APP_ID} --app-roles `;
    const roleCalls = result.azCalls.filter((c) => c.startsWith(prefix));
    expect(roleCalls).toHaveLength(1);
    expect(JSON.parse(roleCalls[0]?.slice(prefix.length) ?? "[]")).toEqual([
      expect.objectContaining({ id: "5b0f0c1e-4f3a-4b8e-9a7d-2c6e1f0a9b31", value: "Console.Operator", allowedMemberTypes: ["User", "Application"] }),
    ]);
    expect(result.stdout).toContain("Letting users and applications hold the app role Console.Operator");
  });

  it("stores the client secret in the credential vault and reminds the deployer to drop the vault role", () => {
    expect(source).toMatch(/key_vault=\$\(deployment_output CREDENTIAL_VAULT_NAME\)/);
    expect(source).not.toMatch(/deployment_output KEY_VAULT_NAME/);
    const result = run(["-g", "rg-mssp"], { az: FAKE_AZ });
    expect(result.status, result.stderr).toBe(0);
    expect(result.stdout).toContain('az role assignment delete --assignee <your object id> --role "Key Vault Secrets Officer"');
    expect(result.stdout).toContain("az keyvault show --name kvc-mssp-abc");
  });

  it("refuses to continue when az is signed in to another tenant than MSSP_TENANT_ID", () => {
    const otherTenant = FAKE_AZ.replace(`"account show"*) echo "${TENANT}"`, `"account show"*) echo "00000000-0000-4000-8000-0000000000ff"`);
    const result = run(["-g", "rg-mssp"], { az: otherTenant });
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/az login --tenant/);
    expect(result.azCalls.some((c) => c.startsWith("ad app"))).toBe(false);
  });
});

/** The JSON of `az ad app federated-credential create|update ... --parameters <json>`. */
function ficParameters(call: string | undefined): { name: string; issuer: string; subject: string; audiences: string[] } {
  const json = /--parameters (\{.*\}) --output none$/.exec(call ?? "")?.[1];
  expect(json, `no --parameters JSON in: ${call}`).toBeDefined();
  return JSON.parse(json ?? "{}") as { name: string; issuer: string; subject: string; audiences: string[] };
}

const FIC_ISSUER = `https://login.microsoftonline.com/${TENANT}/v2.0`;

describe("register-app.sh: the application consent model's permissions", () => {
  it("requests Alert.Read.All on WindowsDefenderATP and SecurityAlert.Read.All on Microsoft Graph as application permissions, ids looked up", () => {
    const result = run(["-g", "rg-mssp"], { az: FAKE_AZ, env: { FAKE_AZ_CREDENTIAL: "managedIdentity" } });
    expect(result.status, result.stderr).toBe(0);
    const calls = result.azCalls;
    expect(calls).toContain(`ad sp show --id fc780465-2017-40d4-a0c5-307022471b92 --query appRoles[?value=='Alert.Read.All'].id | [0] --output tsv`);
    expect(calls).toContain(`ad sp show --id 00000003-0000-0000-c000-000000000000 --query appRoles[?value=='SecurityAlert.Read.All'].id | [0] --output tsv`);
    expect(calls).toContain(`ad app permission add --id ${APP_ID} --api fc780465-2017-40d4-a0c5-307022471b92 --api-permissions ${ROLE_ID}=Role --output none`);
    expect(calls).toContain(`ad app permission add --id ${APP_ID} --api 00000003-0000-0000-c000-000000000000 --api-permissions ${ROLE_ID}=Role --output none`);
    // ...beside the delegated ones, which stay.
    expect(calls).toContain(`ad app permission add --id ${APP_ID} --api fc780465-2017-40d4-a0c5-307022471b92 --api-permissions ${SCOPE_ID}=Scope --output none`);
    // Nothing is granted here: customers consent.
    expect(calls.some((c) => /admin-consent|permission grant/.test(c))).toBe(false);
    // How to get a consent link, for either model.
    expect(result.stdout).toMatch(/POST \/api\/tenants[\s\S]*"consentModel": "application"/);
    expect(result.stdout).toContain("consentUrl");
  });
});

describe("register-app.sh with the managedIdentity credential (no secret anywhere)", () => {
  it("adds the federated credential trusting the app's identity, creates no secret or certificate and needs no vault", () => {
    const result = run(["-g", "rg-mssp"], { az: FAKE_AZ, env: { FAKE_AZ_CREDENTIAL: "managedIdentity" } });
    expect(result.status, result.stderr).toBe(0);
    const calls = result.azCalls;
    const create = calls.filter((c) => c.startsWith(`ad app federated-credential create --id ${APP_ID} `));
    expect(create).toHaveLength(1);
    expect(ficParameters(create[0])).toEqual({
      name: "mssp-connector-app-identity",
      issuer: FIC_ISSUER,
      subject: PRINCIPAL_ID,
      audiences: ["api://AzureADTokenExchange"],
      description: expect.any(String),
    });
    expect(calls.filter((c) => /credential reset|keyvault|CREDENTIAL_VAULT_NAME/.test(c))).toEqual([]);
    expect(result.vault).toBeUndefined();
    expect(calls.at(-1)).toBe(`functionapp config appsettings set --resource-group rg-mssp --name mssp-func-abc --settings MSSP_CLIENT_ID=${APP_ID} --output none`);
    expect(result.stdout).toContain("No client secret or certificate exists");
    expect(result.stdout).not.toMatch(/client secret expires|Key Vault Secrets Officer|Certificates Officer/);
  });

  it("rerun: keeps a correct federated credential, corrects one that trusts another identity", () => {
    const correct = `${FIC_ISSUER}\t${PRINCIPAL_ID}\tapi://AzureADTokenExchange`;
    const kept = run(["-g", "rg-mssp"], { az: FAKE_AZ, env: { FAKE_AZ_CREDENTIAL: "managedIdentity", FAKE_AZ_EXISTING: "1", FAKE_AZ_FIC: correct } });
    expect(kept.status, kept.stderr).toBe(0);
    expect(kept.azCalls.filter((c) => /federated-credential (create|update)/.test(c))).toEqual([]);
    expect(kept.stdout).toContain("Federated credential already present");

    const stale = `${FIC_ISSUER}\t00000000-1111-4222-8333-444444444444\tapi://AzureADTokenExchange`;
    const fixed = run(["-g", "rg-mssp"], { az: FAKE_AZ, env: { FAKE_AZ_CREDENTIAL: "managedIdentity", FAKE_AZ_EXISTING: "1", FAKE_AZ_FIC: stale } });
    expect(fixed.status, fixed.stderr).toBe(0);
    const update = fixed.azCalls.filter((c) => c.startsWith(`ad app federated-credential update --id ${APP_ID} --federated-credential-id mssp-connector-app-identity `));
    expect(update).toHaveLength(1);
    expect(ficParameters(update[0]).subject).toBe(PRINCIPAL_ID);
    expect(fixed.azCalls.some((c) => c.startsWith("ad app federated-credential create"))).toBe(false);
  });

  it("takes every value from options, as the azd hook passes them: no deployment lookup at all", () => {
    const result = run(
      [
        "-g", "rg-mssp", "--credential", "managedIdentity", "--redirect-uri", CALLBACK, "--function-app", "mssp-func-abc",
        "--mssp-tenant-id", TENANT, "--identity-principal-id", PRINCIPAL_ID, "--key-vault", "kvc-mssp-abc",
      ],
      { az: FAKE_AZ },
    );
    expect(result.status, result.stderr).toBe(0);
    expect(result.azCalls.filter((c) => c.startsWith("deployment group show"))).toEqual([]);
    expect(ficParameters(result.azCalls.find((c) => c.startsWith("ad app federated-credential create"))).issuer).toBe(FIC_ISSUER);
  });

  it("the managedIdentity branch of the script holds no secret or certificate creation (text)", () => {
    const secretGuard = 'if [[ "$credential" == secret && "$skip_secret" == false ]]; then';
    const certificateGuard = 'if [[ "$credential" == certificate && "$skip_secret" == false ]]; then';
    const step6 = source.indexOf("# ---- 6. function app setting");
    expect(source.indexOf(secretGuard)).toBeGreaterThan(0);
    expect(source.indexOf(certificateGuard)).toBeGreaterThan(0);
    // Every credential-creating command sits after its guard and before step 6 (and no other
    // branch creates one): with managedIdentity neither guard holds.
    for (const [pattern, guard] of [
      [/reset_command=\(az ad app credential reset/g, secretGuard],
      [/az keyvault secret set/g, secretGuard],
      [/az_do az keyvault certificate create/g, certificateGuard],
      [/az_do az ad app credential reset/g, certificateGuard],
    ] as const) {
      const hits = [...source.matchAll(pattern)].map((m) => m.index ?? 0);
      expect(hits.length, String(pattern)).toBe(1);
      for (const at of hits) {
        expect(at, String(pattern)).toBeGreaterThan(source.indexOf(guard));
        expect(at, String(pattern)).toBeLessThan(step6);
      }
    }
    expect(source.indexOf(certificateGuard)).toBeLessThan(source.indexOf(secretGuard));
    expect(source).not.toMatch(/--create-cert/);
  });

  it("--dry-run without --credential shows the managedIdentity plan, the Bicep default", () => {
    const result = run(["-g", "rg-mssp", "--dry-run"]);
    expect(result.status).toBe(0);
    expect(result.azCalls).toEqual([]);
    expect(result.stdout).toContain("MSSP_CLIENT_CREDENTIAL=managedIdentity");
    expect(result.stdout).toMatch(/\+ az ad app federated-credential create --id '<APP_ID>' --parameters /);
    expect(result.stdout).not.toMatch(/credential reset|keyvault/);
  });
});

describe("register-app.sh with the certificate credential", () => {
  it("creates a PEM certificate in the credential vault and adds only its public key to the registration", () => {
    const result = run(["-g", "rg-mssp"], { az: FAKE_AZ, env: { FAKE_AZ_CREDENTIAL: "certificate" } });
    expect(result.status, result.stderr).toBe(0);
    const calls = result.azCalls;
    const create = calls.find((c) => c.startsWith("keyvault certificate create --vault-name kvc-mssp-abc --name mssp-client-certificate --policy "));
    expect(create).toBeDefined();
    const policy = JSON.parse(/--policy (\{.*\}) --output none$/.exec(create ?? "")?.[1] ?? "{}") as {
      keyProperties: { exportable: boolean; keyType: string; keySize: number };
      secretProperties: { contentType: string };
      x509CertificateProperties: { validityInMonths: number };
      issuerParameters: { name: string };
    };
    // PEM in the backing secret, which the app reads with Key Vault Secrets User.
    expect(policy.secretProperties.contentType).toBe("application/x-pem-file");
    expect(policy.keyProperties).toMatchObject({ exportable: true, keyType: "RSA", keySize: 2048 });
    expect(policy.issuerParameters.name).toBe("Self");
    expect(policy.x509CertificateProperties.validityInMonths).toBe(12);
    const reset = calls.filter((c) => c.startsWith(`ad app credential reset --id ${APP_ID} --append `));
    expect(reset).toHaveLength(1);
    expect(reset[0]).toMatch(/--keyvault kvc-mssp-abc --cert mssp-client-certificate --output none$/);
    expect(calls.findIndex((c) => c === create)).toBeLessThan(calls.findIndex((c) => c === reset[0]));
    // Never the tokens vault, never a client secret, never a private key on screen.
    expect(calls.filter((c) => /keyvault secret set|kv-mssp-abc|--query password/.test(c))).toEqual([]);
    expect(result.vault).toBeUndefined();
    expect(`${result.stdout}${result.stderr}`).not.toMatch(/PRIVATE KEY/);
    // The console's sign-in uses the managed identity (App Service authentication).
    expect(calls.some((c) => c.startsWith(`ad app federated-credential create --id ${APP_ID} `))).toBe(true);
    expect(result.stdout).toContain('--role "Key Vault Certificates Officer"');
  });

  it("--skip-secret creates no certificate version", () => {
    const result = run(["-g", "rg-mssp", "--skip-secret"], { az: FAKE_AZ, env: { FAKE_AZ_CREDENTIAL: "certificate", FAKE_AZ_EXISTING: "1" } });
    expect(result.status, result.stderr).toBe(0);
    expect(result.azCalls.filter((c) => /certificate create|credential reset/.test(c))).toEqual([]);
  });
});
