/**
 * Repository hygiene: the license and changelog say what package.json says; .funcignore publishes
 * what runs and nothing else, under both tools that read it; the GitHub workflows sign in to
 * Azure with OpenID Connect and store no secret; the README links every document under docs/.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = path.resolve(__dirname, "..", "..");
const read = (file: string): string => readFileSync(path.join(ROOT, file), "utf8");
const pkg = JSON.parse(read("package.json")) as { version: string; license: string };

// ---------------------------------------------------------------------------------------------
// The two readings of .funcignore. `true` means: left out of the package.

/** Non-empty, non-comment lines, trimmed (both tools read them so). */
function rulesOf(text: string): string[] {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"));
}

/**
 * .gitignore semantics, as Azure/functions-action applies them (`respect-funcignore`, through the
 * `ignore` package) to every path: a leading or inner "/" anchors at the root, a trailing "/"
 * matches directories only (and so everything below one), "*" stays within a path segment and
 * a leading "**\/" matches any depth. Negations are not needed: the file may not use them.
 */
function gitignoreReading(text: string): (file: string) => boolean {
  const rules = rulesOf(text).map((line) => {
    let pattern = line;
    const dirOnly = pattern.endsWith("/");
    if (dirOnly) pattern = pattern.slice(0, -1);
    let anchored = pattern.includes("/");
    if (pattern.startsWith("/")) {
      pattern = pattern.slice(1);
      anchored = true;
    }
    let source = "";
    for (let i = 0; i < pattern.length; i++) {
      if (pattern.startsWith("**/", i)) {
        source += "(?:.*/)?";
        i += 2;
        continue;
      }
      const c = pattern[i] as string;
      source += c === "*" ? "[^/]*" : c === "?" ? "[^/]" : c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
    }
    return { regex: new RegExp(anchored ? `^${source}$` : `(?:^|/)${source}$`), dirOnly };
  });
  return (file) => {
    const parts = file.split("/");
    for (let i = 1; i <= parts.length; i++) {
      const sub = parts.slice(0, i).join("/");
      const isDirectory = i < parts.length;
      if (rules.some((rule) => (isDirectory || !rule.dirOnly) && rule.regex.test(sub))) return true;
    }
    return false;
  };
}

/**
 * Azure Functions Core Tools' GitIgnoreParser (src/Azure.Functions.Cli/Common/GitIgnoreParser.cs,
 * a port of codemix/gitignore-parser), which `func azure functionapp publish` applies to each
 * file's path relative to the project: a leading "/" is dropped, the patterns become one regular
 * expression anchored at the start of the path only (a prefix match), "**" is ".+" and "*" is
 * "[^/]+".
 */
function coreToolsReading(text: string): (file: string) => boolean {
  const prepare = (pattern: string): string =>
    pattern
      .replace(/[\-[\]/{}()+?.\\^$|]/g, "\\$&")
      .replace(/\*\*/g, "(.+)")
      .replace(/\*/g, "([^\\/]+)");
  const positive: string[] = [];
  const negative: string[] = [];
  for (let line of rulesOf(text)) {
    const isNegative = line.startsWith("!");
    if (isNegative) line = line.slice(1);
    if (line.startsWith("/")) line = line.slice(1);
    (isNegative ? negative : positive).push(line);
  }
  const build = (list: string[]): RegExp => (list.length > 0 ? new RegExp(`^((${[...list].sort().map(prepare).join(")|(")}))`) : /$^/);
  const denied = build(positive);
  const accepted = build(negative);
  return (file) => !(accepted.test(file) || !denied.test(file));
}

const FUNCIGNORE = existsSync(path.join(ROOT, ".funcignore")) ? read(".funcignore") : "";
const READINGS: Array<[string, (file: string) => boolean]> = [
  ["Azure/functions-action (.gitignore rules)", gitignoreReading(FUNCIGNORE)],
  ["func azure functionapp publish (Core Tools prefix rules)", coreToolsReading(FUNCIGNORE)],
];

/** Every file under `dir` (relative to the root, "/"-separated), not descending into `skip` names. */
function filesUnder(dir: string, skip: ReadonlySet<string> = new Set()): string[] {
  const absolute = path.join(ROOT, dir);
  if (!existsSync(absolute)) return [];
  const found: string[] = [];
  const walk = (relative: string): void => {
    for (const entry of readdirSync(path.join(ROOT, relative), { withFileTypes: true })) {
      if (skip.has(entry.name)) continue;
      const child = relative === "" ? entry.name : `${relative}/${entry.name}`;
      if (entry.isDirectory()) walk(child);
      else if (entry.isFile()) found.push(child);
    }
  };
  walk(dir);
  return found;
}

/** Installed packages that `npm prune --omit=dev` keeps, from the lockfile. */
function productionPackageDirs(): string[] {
  const lock = JSON.parse(read("package-lock.json")) as { packages: Record<string, { dev?: boolean; devOptional?: boolean }> };
  return Object.entries(lock.packages)
    .filter(([key, entry]) => key.startsWith("node_modules/") && !entry.dev && !entry.devOptional)
    .map(([key]) => key)
    .filter((dir) => existsSync(path.join(ROOT, dir)));
}

// ---------------------------------------------------------------------------------------------

describe("license and changelog", () => {
  it("LICENSE is the MIT license that package.json declares", () => {
    expect(pkg.license).toBe("MIT");
    const license = read("LICENSE");
    expect(license.split("\n")[0]?.trim()).toBe("MIT License");
    expect(license).toMatch(/^Copyright \(c\) \d{4} \S/m);
    expect(license).toContain("Permission is hereby granted, free of charge, to any person obtaining a copy");
    expect(license).toContain('THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND');
  });

  it("CHANGELOG has a dated release entry for package.json's version", () => {
    const changelog = read("CHANGELOG.md");
    const releases = [...changelog.matchAll(/^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$/gm)].map((m) => ({ version: m[1], date: m[2] }));
    expect(releases.length).toBeGreaterThan(0);
    expect(releases.map((r) => r.version)).toContain(pkg.version);
    for (const { date } of releases) expect(Number.isNaN(Date.parse(`${date}T00:00:00Z`)), date).toBe(false);
  });
});

describe(".funcignore", () => {
  it("exists and uses only forms that both readers understand alike", () => {
    expect(FUNCIGNORE).not.toBe("");
    for (const rule of rulesOf(FUNCIGNORE)) {
      // No re-includes: Core Tools applies negations to the whole path set at once, not in order.
      expect(rule.startsWith("!"), rule).toBe(false);
      // Root-anchored names, or extension globs at the root ("*.x") and below ("**/*.x").
      expect(/^\/[^*!]+$|^\/__[a-z_]+\*$|^(\*\*\/)?\*\.[a-z]+$/.test(rule), rule).toBe(true);
    }
  });

  const leftOut = [
    "test/unit/config.test.ts",
    "test/harness/fixture/ca.pem",
    "test/infra/builtInRoles.json",
    "docs/operations.md",
    "docs/images/console.png",
    "infra/main.bicep",
    "infra/register-app.sh",
    "scripts/bench.mjs",
    "dist-bench/test/fakes/server.js",
    "functions/index.ts",
    "shared/config.ts",
    "shared/pull/tenantPull.ts",
    "dist/functions/index.js.map",
    ".azurite/__blobstorage__/x",
    "__azurite_db_blob__.json",
    "test-artifacts/screenshots/console.png",
    "test-artifacts/chromium-install.log",
    "local.settings.json",
    "local.settings.example.json",
    "tsconfig.json",
    "vitest.config.mts",
    "package-lock.json",
    ".github/workflows/deploy.yml",
    ".ci/run",
    ".git/HEAD",
    "README.md",
    "CHANGELOG.md",
    "node_modules/@azure/functions/types/index.d.ts",
    "node_modules/undici/lib/web/fetch/index.js.map",
  ];
  const kept = [
    "host.json",
    "package.json",
    "dist/functions/index.js",
    "dist/shared/config.js",
    "dist/shared/pull/tenantPull.js",
    "node_modules/@azure/functions/package.json",
    "node_modules/@azure/functions/dist/azure-functions.js",
    "node_modules/undici/index.js",
    "node_modules/jose/dist/webapi/index.js",
    "node_modules/tslib/tslib.js",
  ];

  it.each(READINGS)("%s: leaves out sources, tests, tooling, docs, infra and local files", (_name, ignored) => {
    expect(leftOut.filter((file) => !ignored(file))).toEqual([]);
  });

  it.each(READINGS)("%s: keeps dist/, host.json, package.json and node_modules/", (_name, ignored) => {
    expect(kept.filter((file) => ignored(file))).toEqual([]);
  });

  it.each(READINGS)("%s: keeps every file that runs (compiled output and production packages)", (_name, ignored) => {
    const runtime = /\.(?:js|cjs|mjs|json|node|wasm)$/;
    const files = [
      ...filesUnder("dist").filter((file) => runtime.test(file)),
      ...productionPackageDirs().flatMap((dir) => filesUnder(dir, new Set(["node_modules"])).filter((file) => runtime.test(file))),
    ];
    expect(files.length).toBeGreaterThan(100);
    expect(files.filter((file) => ignored(file))).toEqual([]);
  });

  it("means the same to both readers for every file of the working tree", () => {
    const [[, gitignore], [, coreTools]] = READINGS as [[string, (f: string) => boolean], [string, (f: string) => boolean]];
    const files = filesUnder("", new Set([".git"]));
    expect(files.length).toBeGreaterThan(100);
    expect(files.filter((file) => gitignore(file) !== coreTools(file))).toEqual([]);
  });
});

describe("GitHub workflows", () => {
  const test = read(".github/workflows/test.yml");
  const deploy = read(".github/workflows/deploy.yml");

  /** The keys directly under a top-level (or two-space-indented) `name:` block. */
  function keysOf(text: string, block: string, indent = ""): string[] {
    const lines = text.split("\n");
    const start = lines.findIndex((line) => line === `${indent}${block}:`);
    if (start < 0) return [];
    const keys: string[] = [];
    for (const line of lines.slice(start + 1)) {
      if (line.trim() === "" || line.trim().startsWith("#")) continue;
      if (!line.startsWith(`${indent}  `)) break;
      const match = new RegExp(`^${indent}  ([A-Za-z_-]+):`).exec(line);
      if (match?.[1]) keys.push(match[1]);
    }
    return keys;
  }

  it("are plain YAML without tabs, and pin every action to a major version", () => {
    for (const [name, text] of [["test.yml", test], ["deploy.yml", deploy]] as const) {
      expect(text.includes("\t"), name).toBe(false);
      for (const [, action] of text.matchAll(/^\s*(?:- )?uses:\s*(\S+)\s*$/gm)) {
        expect(/^\.\/\.github\/workflows\/[a-z-]+\.yml$|^[A-Za-z0-9-]+\/[A-Za-z0-9-]+@v\d+$/.test(action as string), `${name}: ${action}`).toBe(true);
      }
    }
  });

  it("test.yml: reusable, Node 20 and 22, the README's test command, test-artifacts/ uploaded", () => {
    expect(keysOf(test, "on")).toEqual(["push", "pull_request", "workflow_call"]);
    expect(test).toMatch(/runs-on: ubuntu-latest/);
    expect(test).toMatch(/node: \[20, 22\]/);
    expect(test).toMatch(/uses: actions\/setup-node@v\d+[\s\S]*node-version: \$\{\{ matrix\.node \}\}/);
    expect(test).toMatch(/npm ci\b/);
    expect(test).toMatch(/run: npm test$/m);
    expect(test).toMatch(/uses: actions\/upload-artifact@v\d+[\s\S]*path: test-artifacts\//);
    // The harness looks for Chromium at one fixed path and installs it only as root.
    expect(test).toContain("/usr/bin/chromium");
    expect(test).toMatch(/sudo apt-get install -y --no-install-recommends chromium/);
  });

  it("deploy.yml: dispatched or called with a resource group and an environment; builds the bundle, deploys the Bicep, publishes deploy/", () => {
    expect(keysOf(deploy, "on")).toEqual(["workflow_dispatch", "workflow_call"]);
    const triggers = /^on:\n([\s\S]*?)^\S/m.exec(deploy)?.[1] ?? "";
    const [dispatch = "", call = ""] = triggers.split(/^ {2}workflow_call:$/m);
    for (const [trigger, block] of [["workflow_dispatch", dispatch], ["workflow_call", call]] as const) {
      expect(block, trigger).toMatch(/^ {4}inputs:$/m);
      expect(block, trigger).toMatch(/^ {6}resource-group:$/m);
      expect(block, trigger).toMatch(/^ {6}environment:$/m);
    }
    expect(deploy).toMatch(/environment: \$\{\{ inputs\.environment \}\}/);
    expect(deploy).toMatch(/npm ci\b[\s\S]*npm run bundle/);
    expect(deploy).toMatch(/az deployment group create[\s\S]*--template-file infra\/main\.bicep[\s\S]*clientId=/);
    expect(deploy).toMatch(/uses: Azure\/functions-action@v1[\s\S]*package: deploy\n[\s\S]*respect-funcignore: true/);
    expect(deploy).toMatch(/uses: \.\/\.github\/workflows\/test\.yml/);
  });

  it("deploy.yml: signs in with OpenID Connect (id-token: write, azure/login with ids from variables)", () => {
    expect(deploy).toMatch(/^ {6}id-token: write\b/m);
    expect(deploy).toMatch(/^ {6}contents: read\b/m);
    const login = /uses: azure\/login@v2\n(\s+)with:\n((?:\1 {2}.*\n)+)/.exec(deploy);
    expect(login, "an azure/login@v2 step with a with: block").not.toBeNull();
    const withBlock = login?.[2] ?? "";
    expect(withBlock).toMatch(/client-id: \$\{\{ vars\.AZURE_CLIENT_ID \}\}/);
    expect(withBlock).toMatch(/tenant-id: \$\{\{ vars\.AZURE_TENANT_ID \}\}/);
    expect(withBlock).toMatch(/subscription-id: \$\{\{ vars\.AZURE_SUBSCRIPTION_ID \}\}/);
    expect(withBlock).not.toMatch(/creds:|client-secret:/);
  });

  it("store no secret: no secrets context, no credentials JSON, no publish profile", () => {
    for (const [name, text] of [["test.yml", test], ["deploy.yml", deploy]] as const) {
      const code = text
        .split("\n")
        .filter((line) => !line.trim().startsWith("#"))
        .join("\n");
      expect(code, name).not.toMatch(/\bsecrets\./);
      expect(code, name).not.toMatch(/\bsecrets: inherit\b/);
      expect(code, name).not.toMatch(/\bcreds:|publish-profile:|client-secret:|AZURE_CREDENTIALS/);
    }
  });
});

describe("README", () => {
  it("links every document under docs/ from its More list, and each link resolves", () => {
    const readme = read("README.md");
    const more = /^## More\n([\s\S]*?)(?=^## |(?![\s\S]))/m.exec(readme)?.[1] ?? "";
    const linked = [...more.matchAll(/\]\((docs\/[^)#\s]+\.md)\)/g)].map((m) => m[1] as string);
    const docs = readdirSync(path.join(ROOT, "docs"))
      .filter((name) => name.endsWith(".md"))
      .map((name) => `docs/${name}`);
    expect(docs.filter((doc) => !linked.includes(doc))).toEqual([]);
    expect(linked.filter((link) => !existsSync(path.join(ROOT, link)))).toEqual([]);
  });
});
