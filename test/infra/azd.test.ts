/**
 * `azd up` (azure.yaml at the repository root) on the conventions of Microsoft's azd Functions
 * templates: infra/main.bicep with infra/main.parameters.json filled from the azd environment,
 * a postprovision hook that registers the Entra ID app through infra/register-app.sh with the
 * deployment's outputs, and the service `api` = the bundle folder deploy/ (built by a prepackage
 * hook at the repository root) deployed to the Flex Consumption app tagged azd-service-name.
 * No azd here: the files are checked as text, and the hook is run against a fake az and azd.
 */
import { spawnSync } from "node:child_process";
import { accessSync, chmodSync, constants, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { INFRA_DIR, REPO_ROOT, listBicepFiles, literal, modules, outputs, params, readBicep, resourceBody } from "./bicepText";
import { type YamlMap, parseYamlSubset, yamlAt } from "./yamlSubset";

const azureYaml = parseYamlSubset(readFileSync(path.join(REPO_ROOT, "azure.yaml"), "utf8"));
const str = (dotted: string): string | undefined => {
  const value = yamlAt(azureYaml, dotted);
  return typeof value === "string" ? value : undefined;
};
const main = readBicep("main.bicep");
const mainParams = new Map(params(main).map((p) => [p.name, p]));
const mainOutputs = new Set(outputs(main));
const parametersFile = JSON.parse(readFileSync(path.join(INFRA_DIR, "main.parameters.json"), "utf8")) as {
  $schema: string;
  parameters: Record<string, { value: unknown }>;
};
const deployDocs = readFileSync(path.join(REPO_ROOT, "docs", "deploy.md"), "utf8");

/** Variables azd itself defines for parameter substitution (azd docs, "Environment variables"). */
const AZD_VARIABLES = ["AZURE_ENV_NAME", "AZURE_LOCATION", "AZURE_PRINCIPAL_ID", "AZURE_PRINCIPAL_TYPE"];
/** Variables azd sets for hooks besides the deployment's outputs. */
const AZD_HOOK_VARIABLES = ["AZURE_RESOURCE_GROUP"];

/** Both OS variants of a project-level hook. */
function hook(name: string): { posix: YamlMap; windows: YamlMap } {
  const value = yamlAt(azureYaml, `hooks.${name}`);
  expect(value, `hooks.${name}`).toBeTypeOf("object");
  const posix = yamlAt(value as YamlMap, "posix");
  const windows = yamlAt(value as YamlMap, "windows");
  expect(posix, `hooks.${name}.posix`).toBeTypeOf("object");
  expect(windows, `hooks.${name}.windows`).toBeTypeOf("object");
  return { posix: posix as YamlMap, windows: windows as YamlMap };
}

describe("azure.yaml", () => {
  it("names the project, and the Bicep module azd provisions: infra/main.bicep", () => {
    expect(str("name")).toMatch(/^[a-z0-9-]+$/);
    expect(str("infra.provider")).toBe("bicep");
    expect(str("infra.path")).toBe("infra");
    expect(str("infra.module")).toBe("main");
    expect(existsSync(path.join(REPO_ROOT, str("infra.path") ?? "", `${str("infra.module")}.bicep`))).toBe(true);
    // azd reads <module>.parameters.json beside the module.
    expect(existsSync(path.join(REPO_ROOT, str("infra.path") ?? "", `${str("infra.module")}.parameters.json`))).toBe(true);
  });

  it("deploys one service, api: the bundle folder deploy/, JavaScript, to Azure Functions", () => {
    expect(Object.keys(yamlAt(azureYaml, "services") as YamlMap)).toEqual(["api"]);
    expect(str("services.api.project")).toBe("./deploy");
    expect(str("services.api.language")).toBe("js");
    expect(str("services.api.host")).toBe("function");
    // deploy/ is self-contained (the bundle and its few external packages): shipped as it is,
    // not rebuilt by Oryx on the platform.
    expect(str("services.api.remoteBuild")).toBe("false");
    // No hooks on the service: its folder (deploy/) does not exist before the bundle is built, and
    // azd runs service hooks inside it.
    expect(yamlAt(azureYaml, "services.api.hooks")).toBeUndefined();
  });

  it("builds deploy/ before packaging, at the repository root: npm ci, then npm run bundle (posix and Windows)", () => {
    const { posix, windows } = hook("prepackage");
    expect(posix["shell"]).toBe("sh");
    expect(posix["run"]).toBe("npm ci && npm run bundle");
    expect(windows["shell"]).toBe("pwsh");
    // pwsh runs the bundle only when npm ci succeeded, and fails the hook like sh's && would.
    expect(windows["run"]).toBe("npm ci; if ($LASTEXITCODE -eq 0) { npm run bundle }; exit $LASTEXITCODE");
    for (const variant of [posix, windows]) expect(variant["continueOnError"]).toBe("false");
    // The contract with package.json: `npm run bundle` exists and writes deploy/.
    const pkg = JSON.parse(readFileSync(path.join(REPO_ROOT, "package.json"), "utf8")) as { scripts?: Record<string, string> };
    expect(pkg.scripts?.["bundle"], "package.json has no bundle script").toBeDefined();
    expect(deployDocs).toContain("npm ci && npm run bundle");
  });

  it("registers the Entra ID app after provisioning, with a script that exists and is executable (posix and Windows)", () => {
    const { posix, windows } = hook("postprovision");
    expect(posix["shell"]).toBe("sh");
    expect(posix["run"]).toBe("./infra/hooks/postprovision.sh");
    expect(windows["shell"]).toBe("pwsh");
    expect(windows["run"]).toBe("./infra/hooks/postprovision.ps1");
    for (const variant of [posix, windows]) {
      expect(variant["continueOnError"]).toBe("false");
      const file = path.join(REPO_ROOT, variant["run"] as string);
      expect(existsSync(file), file).toBe(true);
      accessSync(file, constants.X_OK);
      expect(statSync(file).mode & 0o111, file).not.toBe(0);
    }
    const sh = readFileSync(path.join(REPO_ROOT, posix["run"] as string), "utf8");
    expect(sh.split("\n")[0]).toBe("#!/bin/sh");
    expect(sh).toMatch(/^set -eu$/m);
    expect(spawnSync("sh", ["-n", path.join(REPO_ROOT, posix["run"] as string)], { encoding: "utf8" }).status).toBe(0);
    // It registers through the one registration script, and the Windows variant runs the same hook.
    expect(sh).toMatch(/bash "\$script_dir\/\.\.\/register-app\.sh" "\$@"/);
    const ps1 = readFileSync(path.join(REPO_ROOT, windows["run"] as string), "utf8");
    expect(ps1).toContain("postprovision.sh");
    expect(ps1).toMatch(/exit \$LASTEXITCODE/);
  });

  it("has only hooks that exist in azd and plain key: value YAML", () => {
    expect(Object.keys(yamlAt(azureYaml, "hooks") as YamlMap).sort()).toEqual(["postprovision", "prepackage"]);
    expect(() => parseYamlSubset("a:\n  - b\n")).toThrow();
    expect(() => parseYamlSubset("a: {b: c}\n")).toThrow();
    expect(parseYamlSubset("a: # c\n  b: 'x # y'\n")).toEqual({ a: { b: "x # y" } });
  });
});

describe("infra/main.parameters.json (azd)", () => {
  const variables = (value: unknown): string[] => [...JSON.stringify(value).matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}/g)].map((m) => m[1] as string);

  it("sets only main.bicep parameters, each from one ${VAR} of the azd environment", () => {
    expect(parametersFile.$schema).toContain("deploymentParameters.json");
    const entries = Object.entries(parametersFile.parameters);
    expect(entries.length).toBeGreaterThan(5);
    for (const [name, { value }] of entries) {
      expect(mainParams.has(name), `${name} is not a main.bicep parameter`).toBe(true);
      expect(variables(value).length, `${name} takes no \${VAR}`).toBe(1);
      expect(name).not.toMatch(/(secret|password|connectionString|accessKey|sasToken|apiKey)/i);
    }
  });

  it("uses azd's own variables for location, tags and the deployer, the way Microsoft's templates do", () => {
    expect(parametersFile.parameters["location"]?.value).toBe("${AZURE_LOCATION}");
    expect(parametersFile.parameters["tags"]?.value).toEqual({ "azd-env-name": "${AZURE_ENV_NAME}" });
    expect(parametersFile.parameters["deployerPrincipalId"]?.value).toBe("${AZURE_PRINCIPAL_ID}");
    expect(parametersFile.parameters["deployerPrincipalType"]?.value).toBe("${AZURE_PRINCIPAL_TYPE=User}");
    // the values azd gives AZURE_PRINCIPAL_TYPE are among the parameter's allowed ones
    const allowed = mainParams.get("deployerPrincipalType")?.decorators.find((d) => d.name === "allowed")?.args ?? "";
    for (const type of ["User", "ServicePrincipal"]) expect(allowed).toContain(`'${type}'`);
  });

  it("every other ${VAR} is documented in docs/deploy.md; unset, it falls back to the Bicep default (secretless managedIdentity)", () => {
    const own = Object.values(parametersFile.parameters).flatMap(({ value }) => variables(value)).filter((v) => !AZD_VARIABLES.includes(v));
    expect(own).toContain("MSSP_CLIENT_ID");
    expect(own).toContain("MSSP_CLIENT_CREDENTIAL");
    for (const variable of own) expect(deployDocs, `${variable} is not documented`).toContain(`\`${variable}\``);
    expect(parametersFile.parameters["clientId"]?.value).toBe("${MSSP_CLIENT_ID}");
    expect(parametersFile.parameters["clientCredentialType"]?.value).toBe("${MSSP_CLIENT_CREDENTIAL=managedIdentity}");
    expect(literal(mainParams.get("clientCredentialType")?.defaultValue)).toBe("managedIdentity");
    for (const name of Object.keys(parametersFile.parameters)) {
      if (name === "location" || name === "tags") continue;
      expect(mainParams.get(name)?.defaultValue, `${name} needs a default for an unset variable`).toBeDefined();
      // azd passes an unset variable on as "" (it does not fall back to the Bicep default), which
      // fails @minLength and @allowed: the parameters file repeats each non-empty default.
      const declared = mainParams.get(name)?.defaultValue?.trim() ?? "";
      const fallback = literal(declared) ?? (/^(true|false|\d+)$/.test(declared) ? declared : undefined);
      const value = JSON.stringify(parametersFile.parameters[name]?.value);
      if (fallback) expect(value, `${name} must fall back to ${fallback}`).toMatch(new RegExp(`\\$\\{[A-Z_]+=${fallback}\\}`));
      else expect(value, `${name}: an empty default needs no fallback`).not.toContain("=");
    }
  });
});

describe("Bicep for azd", () => {
  it("tags the function app, and only it, with azd-service-name = the service in azure.yaml", () => {
    const fn = readBicep("modules/functionapp.bicep");
    const site = resourceBody(fn, "site").body.find((entry) => entry.key === "tags")?.value;
    expect(site).toBe("empty(azdServiceName) ? tags : union(tags, { 'azd-service-name': azdServiceName })");
    const [service] = Object.keys(yamlAt(azureYaml, "services") as YamlMap);
    expect(modules(main).find((m) => m.path === "modules/functionapp.bicep")?.params.find((e) => e.key === "azdServiceName")?.value).toBe(
      `'${service}'`,
    );
    // azd finds the target by this tag; a second tagged resource would make it ambiguous.
    for (const file of listBicepFiles()) {
      const count = (readBicep(file).code.match(/'azd-service-name':/g) ?? []).length;
      expect(count, file).toBe(file === "modules/functionapp.bicep" ? 1 : 0);
    }
  });

  it("deploys at resource-group scope, so azd needs AZURE_RESOURCE_GROUP, which the docs say to set", () => {
    expect(main.code).toMatch(/^targetScope = 'resourceGroup'$/m);
    expect(deployDocs).toContain("azd env set AZURE_RESOURCE_GROUP");
  });

  it("outputs every value the postprovision hook reads", () => {
    const sh = readFileSync(path.join(INFRA_DIR, "hooks", "postprovision.sh"), "utf8");
    const required = /for name in ([A-Z_ \\\n]+); do/.exec(sh)?.[1]?.split(/[\s\\]+/).filter(Boolean) ?? [];
    expect(required.length).toBeGreaterThan(4);
    const read = new Set([...sh.matchAll(/\$\{?([A-Z][A-Z0-9_]*)/g)].map((m) => m[1] as string));
    for (const name of required) read.add(name);
    // Besides outputs: azd's resource group, the application id this hook keeps, the rotation switch.
    const notOutputs = new Set([...AZD_HOOK_VARIABLES, "MSSP_CLIENT_ID", "MSSP_ROTATE_CREDENTIAL"]);
    for (const name of read) {
      if (notOutputs.has(name)) continue;
      expect(mainOutputs.has(name), `the hook reads ${name}, which main.bicep does not output`).toBe(true);
    }
    for (const name of ["CONSENT_CALLBACK_URL", "FUNCTION_APP_NAME", "MSSP_TENANT_ID", "MSSP_CLIENT_CREDENTIAL", "MANAGED_IDENTITY_PRINCIPAL_ID", "CREDENTIAL_VAULT_NAME"]) {
      expect(required, name).toContain(name);
    }
    for (const name of notOutputs) expect(deployDocs, name).toContain(name);
  });
});

// ---- the hook against a fake az and azd --------------------------------------------------------

const TENANT = "72f988bf-0000-4000-8000-00000000000a";
const APP_ID = "11111111-2222-4333-8444-555555555555";
const PERMISSION_ID = "99999999-8888-4777-8666-555555555555";
const PRINCIPAL_ID = "44444444-3333-4222-8111-000000000000";
const workDir = mkdtempSync(path.join(tmpdir(), "azd-hook-test-"));
afterAll(() => rmSync(workDir, { recursive: true, force: true }));

/** Logs every call to $FAKE_LOG as "<tool> <args>"; answers the lookups register-app.sh makes. */
const FAKE_AZ = `#!/usr/bin/env bash
printf 'az %s\\n' "$*" >>"$FAKE_LOG"
case "$*" in
  "account show"*) echo "${TENANT}" ;;
  "deployment group show"*) exit 3 ;;
  "ad app create"*) echo "${APP_ID}" ;;
  "ad app show --id ${APP_ID} --query appId"*) echo "${APP_ID}" ;;
  "ad app list"*) if [[ -n "\${FAKE_EXISTING:-}" ]]; then echo "${APP_ID}"; fi ;;
  "ad sp show"*) echo "${PERMISSION_ID}" ;;
  *) ;;
esac
exit 0
`;
const FAKE_AZD = `#!/usr/bin/env bash
printf 'azd %s\\n' "$*" >>"$FAKE_LOG"
`;

interface HookRun {
  status: number | null;
  stdout: string;
  stderr: string;
  calls: string[];
}

let hookRuns = 0;
function runHook(env: Record<string, string>): HookRun {
  hookRuns += 1;
  const bin = path.join(workDir, `bin-${hookRuns}`);
  mkdirSync(bin, { recursive: true });
  for (const [name, script] of [["az", FAKE_AZ], ["azd", FAKE_AZD]] as const) {
    writeFileSync(path.join(bin, name), script);
    chmodSync(path.join(bin, name), 0o755);
  }
  const log = path.join(workDir, `calls-${hookRuns}.log`);
  const outputs = {
    AZURE_RESOURCE_GROUP: "rg-azd",
    CONSENT_CALLBACK_URL: "https://mssp-func-abc.azurewebsites.net/api/consent/callback",
    FUNCTION_APP_NAME: "mssp-func-abc",
    MSSP_TENANT_ID: TENANT,
    MSSP_CLIENT_CREDENTIAL: "managedIdentity",
    MANAGED_IDENTITY_PRINCIPAL_ID: PRINCIPAL_ID,
    CREDENTIAL_VAULT_NAME: "kvc-mssp-abc",
    MSSP_CLIENT_CERTIFICATE_NAME: "",
  };
  const result = spawnSync("sh", [path.join(INFRA_DIR, "hooks", "postprovision.sh")], {
    cwd: REPO_ROOT,
    encoding: "utf8",
    timeout: 30_000,
    env: { PATH: `${bin}${path.delimiter}${process.env["PATH"] ?? ""}`, HOME: workDir, FAKE_LOG: log, ...outputs, ...env },
  });
  return {
    status: result.status,
    stdout: result.stdout,
    stderr: result.stderr,
    calls: existsSync(log) ? readFileSync(log, "utf8").split("\n").filter(Boolean) : [],
  };
}

describe("infra/hooks/postprovision.sh against a fake az and azd", () => {
  it("first azd up with the default credential: federated credential on the app's identity, no secret, application id kept in the azd environment", () => {
    const result = runHook({});
    expect(result.status, result.stderr).toBe(0);
    const calls = result.calls;
    // values come from the azd environment, never from a deployment lookup
    expect(calls.filter((c) => c.startsWith("az deployment"))).toEqual([]);
    const fic = calls.find((c) => c.startsWith(`az ad app federated-credential create --id ${APP_ID} --parameters `));
    const parameters = JSON.parse(/--parameters (\{.*\}) --output none$/.exec(fic ?? "")?.[1] ?? "{}") as Record<string, unknown>;
    expect(parameters).toMatchObject({
      issuer: `https://login.microsoftonline.com/${TENANT}/v2.0`,
      subject: PRINCIPAL_ID,
      audiences: ["api://AzureADTokenExchange"],
    });
    expect(calls.filter((c) => /credential reset|keyvault/.test(c))).toEqual([]);
    expect(calls).toContain(`az functionapp config appsettings set --resource-group rg-azd --name mssp-func-abc --settings MSSP_CLIENT_ID=${APP_ID} --output none`);
    expect(calls.at(-1)).toBe(`azd env set MSSP_CLIENT_ID ${APP_ID}`);
    // the console's sign-in needs clientId in the deployment: one more provision, said plainly
    expect(result.stdout).toMatch(/azd provision/);
  });

  it("later runs reuse the application id and create no new certificate unless MSSP_ROTATE_CREDENTIAL=true", () => {
    const later = runHook({ MSSP_CLIENT_ID: APP_ID, MSSP_CLIENT_CREDENTIAL: "certificate", MSSP_CLIENT_CERTIFICATE_NAME: "mssp-client-certificate", FAKE_EXISTING: "1" });
    expect(later.status, later.stderr).toBe(0);
    expect(later.calls.some((c) => c.startsWith(`az ad app show --id ${APP_ID} --query appId`))).toBe(true);
    expect(later.calls.filter((c) => /certificate create|credential reset|ad app create/.test(c))).toEqual([]);
    expect(later.stdout).not.toMatch(/run\s+azd provision/);

    const rotate = runHook({ MSSP_CLIENT_ID: APP_ID, MSSP_CLIENT_CREDENTIAL: "certificate", MSSP_CLIENT_CERTIFICATE_NAME: "mssp-client-certificate", MSSP_ROTATE_CREDENTIAL: "true" });
    expect(rotate.status, rotate.stderr).toBe(0);
    expect(rotate.calls.some((c) => c.startsWith("az keyvault certificate create --vault-name kvc-mssp-abc --name mssp-client-certificate "))).toBe(true);
    expect(rotate.calls).toContain("azd env set MSSP_ROTATE_CREDENTIAL false");
  });

  it("refuses with a clear message when an output is missing from the azd environment", () => {
    const result = runHook({ MANAGED_IDENTITY_PRINCIPAL_ID: "" });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain("MANAGED_IDENTITY_PRINCIPAL_ID");
    expect(result.calls).toEqual([]);
  });
});

describe("docs/deploy.md", () => {
  it("documents azd up first, then the manual path with the bundle folder", () => {
    const azd = deployDocs.indexOf("azd up");
    const manual = deployDocs.search(/^## .*[Mm]anual/m);
    expect(azd).toBeGreaterThan(0);
    expect(manual).toBeGreaterThan(azd);
    expect(deployDocs).toMatch(/cd deploy && func azure functionapp publish/);
    expect(deployDocs).toContain("infra/register-app.sh");
  });
});
