/**
 * The app settings infra/ deploys, read from the Bicep text (no compiler here, see bicepText.ts),
 * including the ones that exist only for one app credential type: functionapp.bicep merges
 * `credentialSettings[clientCredentialType]` into the settings, so a setting may exist for some
 * values of MSSP_CLIENT_CREDENTIAL only (`only`).
 */
import {
  type ObjectEntry,
  listBicepFiles,
  literal,
  matchingClose,
  objectEntries,
  readBicep,
  resourceBody,
  varValueIndex,
} from "./bicepText";

export interface Setting extends ObjectEntry {
  readonly file: string;
  /** The credential types this setting is deployed for; undefined: for every type. */
  readonly only?: readonly string[];
}

/** `union({ ... }, <var>[<param>])`: the literal object and the selected variable. */
const UNION = /^union\(\{[\s\S]*\},\s*([A-Za-z_]\w*)\[([A-Za-z_]\w*)\]\)$/;

/** The parameter `functionapp.bicep` selects its per-credential settings with. */
export const CREDENTIAL_SELECTOR = { variable: "credentialSettings", param: "clientCredentialType" } as const;

/**
 * Extracts every app setting declared in infra/*.bicep. Two shapes are recognised:
 *  1. a `Microsoft.Web/sites/config` resource named 'appsettings': each top-level key of its
 *     `properties` object is a setting (`KEY: value`); `properties` may also be
 *     `union({ ... }, credentialSettings[clientCredentialType])`, whose variable maps each
 *     credential type to the settings only that type gets;
 *  2. a `siteConfig.appSettings` array of `{ name: 'KEY', value: ... }` objects.
 * Shape 1 is what infra uses; shape 2 is recognised so that a later switch can't bypass the tests.
 */
export function extractAppSettings(): Setting[] {
  const settings: Setting[] = [];
  for (const file of listBicepFiles()) {
    const scanned = readBicep(file);
    // shape 1
    for (const match of scanned.code.matchAll(/^[ \t]*resource[ \t]+([A-Za-z_][A-Za-z0-9_]*)[ \t]+'Microsoft\.Web\/sites\/config@/gm)) {
      const { body } = resourceBody(scanned, match[1] as string);
      if (literal(body.find((entry) => entry.key === "name")?.value) !== "appsettings") continue;
      const properties = body.find((entry) => entry.key === "properties");
      if (!properties) throw new Error(`${file}: appsettings resource ${match[1]} has no properties`);
      if (scanned.masked[properties.valueIndex] === "{") {
        settings.push(...objectEntries(scanned, properties.valueIndex).map((entry) => ({ ...entry, file })));
        continue;
      }
      const union = UNION.exec(properties.value);
      if (!union || union[1] !== CREDENTIAL_SELECTOR.variable || union[2] !== CREDENTIAL_SELECTOR.param) {
        throw new Error(`${file}: appsettings resource ${match[1]}: properties is neither an object literal nor ${CREDENTIAL_SELECTOR.variable}[${CREDENTIAL_SELECTOR.param}] merged into one`);
      }
      const literalOpen = scanned.masked.indexOf("{", properties.valueIndex);
      settings.push(...objectEntries(scanned, literalOpen).map((entry) => ({ ...entry, file })));
      const byKey = new Map<string, { entry: ObjectEntry; only: string[] }>();
      for (const branch of objectEntries(scanned, varValueIndex(scanned, CREDENTIAL_SELECTOR.variable))) {
        if (scanned.masked[branch.valueIndex] !== "{") throw new Error(`${file}: ${branch.key} is not an object literal`);
        for (const entry of objectEntries(scanned, branch.valueIndex)) {
          const seen = byKey.get(entry.key);
          if (seen && seen.entry.value !== entry.value) throw new Error(`${file}: ${entry.key} differs between credential types`);
          if (seen) seen.only.push(branch.key);
          else byKey.set(entry.key, { entry, only: [branch.key] });
        }
      }
      for (const { entry, only } of byKey.values()) settings.push({ ...entry, file, only });
    }
    // shape 2
    for (const match of scanned.masked.matchAll(/\bappSettings[ \t]*:[ \t]*\[/g)) {
      const open = (match.index ?? 0) + match[0].length - 1;
      const body = scanned.code.slice(open, matchingClose(scanned.masked, open));
      for (const nameMatch of body.matchAll(/\bname[ \t]*:[ \t]*'([^']+)'/g)) {
        settings.push({ key: nameMatch[1] as string, value: "", valueIndex: open, file });
      }
    }
  }
  return settings;
}

/** The settings a deployment with this MSSP_CLIENT_CREDENTIAL creates. */
export function settingsFor(settings: readonly Setting[], credentialType: string): Setting[] {
  return settings.filter((setting) => setting.only === undefined || setting.only.includes(credentialType));
}

/** The credential types functionapp.bicep maps, in the order written. */
export function credentialBranches(): string[] {
  const fn = readBicep("modules/functionapp.bicep");
  return objectEntries(fn, varValueIndex(fn, CREDENTIAL_SELECTOR.variable)).map((entry) => entry.key);
}
