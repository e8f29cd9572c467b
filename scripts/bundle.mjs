#!/usr/bin/env node
// `npm run bundle`: the deployment package as one bundled entry, in deploy/ (git-ignored).
//
//   node scripts/bundle.mjs [--out DIR] [--no-build] [--eager]
//
// 1. Builds dist/ with tsc (as `npm run build`), unless --no-build.
// 2. Bundles package.json `main` (dist/functions/index.js, the entry the Functions host loads) and
//    everything it imports into deploy/index.js with esbuild: platform node, target node20, CommonJS,
//    with a source map beside it (deploy/index.js.map, composed with tsc's maps so it points into
//    the TypeScript sources; left out of the published package by deploy/.funcignore). The packages
//    the app's own modules import are evaluated on first use, not with the entry (deferredImports
//    below; --eager turns that off).
// 3. Writes the rest of a publishable app: host.json, a package.json whose `main` is the bundle and
//    whose dependencies are only the externals (exact versions from the root package.json), those
//    externals with their own dependencies copied from node_modules/ (so deploy/ runs as it is, no
//    install needed), the bundled packages' licence texts, and a .funcignore.
// Publish with `cd deploy && func azure functionapp publish <app>` (docs/deploy.md).
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import { performance } from "node:perf_hooks";
import { isBuiltin } from "node:module";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

/**
 * Not bundled: the Node.js worker hands the app's functions to the host through the one copy of
 * @azure/functions it finds beside the app, and it must be exactly one copy (two would register
 * nothing, or twice). It stays a dependency, installed in deploy/node_modules.
 */
export const EXTERNALS = ["@azure/functions"];

/** The bundle's file name inside the output folder, and so deploy/package.json `main`. */
export const BUNDLE_FILE = "index.js";

/**
 * Files the app or a bundled dependency reads at run time and that must therefore stay files
 * next to the bundle: none today. Checked when the bundle was introduced (issue 14):
 * - the consent and console pages' stylesheet and script are strings in shared/ui/assets.ts;
 * - the only readFileSync of the app reads LOCAL_DEV_CA_CERT_FILE, a path from the settings;
 * - undici's llhttp and @azure/storage-common's CRC64 WebAssembly are inlined as base64 in
 *   their JavaScript, not read from .wasm files;
 * - the files read by dependencies (`open`'s xdg-open, require-in-the-middle's package.json
 *   lookups, rhea's connect.json, Arc identity secret files) belong to code paths this app never
 *   takes: interactive browser sign-in, automatic instrumentation (telemetry registers the
 *   Functions instrumentation explicitly), rhea's own default connection, Azure Arc.
 * Add an entry `{ from: "<path under the repo>", to: "<path under deploy/>" }` for any that appears.
 */
export const ASSETS = [];

/**
 * Packages the app's own modules import that load on first use instead of with the entry (see
 * deferredImports): all of them but the externals and these, whose modules only hold the
 * OpenTelemetry API's global registry and cost nothing to load.
 */
export const EAGER = ["@opentelemetry/api", "@opentelemetry/api-logs"];

/**
 * The host loads the entry only to learn the functions; the SDKs they call are needed at the first
 * invocation, and each invocation needs only some of them (a health check: tables and Key Vault;
 * the consent pages: none). So an import of a package by the app's own compiled code
 * (`const x = require("@azure/data-tables")`, as tsc emits it) gets, in the bundle, an object that
 * requires the bundled package on its first property access and forwards everything to it. The
 * package is still in the one file and evaluated at most once, as if required there; only the
 * moment it is evaluated moves. An import the app uses at load (a top-level `extends`, a constant
 * built from the package, tsc's default-import helper reading `__esModule`) simply loads it then.
 * Imports between packages are left as they are.
 * The tests run the unbundled build, where every import loads with the entry; test/integration/
 * bundle.test.ts runs a pull and the health check through the bundle.
 */
export function deferredImports(appDir) {
  const prefix = appDir.endsWith(sep) ? appDir : appDir + sep;
  return {
    name: "deferred-imports",
    setup(build) {
      build.onResolve({ filter: /^(?:@[^./][^/]*\/)?[^./][^/]*$/ }, (args) => {
        if (args.namespace !== "file" || !args.importer.startsWith(prefix)) return undefined;
        if (EXTERNALS.includes(args.path) || EAGER.includes(args.path) || args.path.startsWith("node:") || isBuiltin(args.path)) return undefined;
        return { path: args.path, namespace: "deferred" };
      });
      build.onLoad({ filter: /.*/, namespace: "deferred" }, (args) => ({
        resolveDir: appDir,
        loader: "js",
        contents: `"use strict";
let loaded;
const load = () => (loaded ??= require(${JSON.stringify(args.path)}));
module.exports = new Proxy({}, {
  get: (_, key) => load()[key],
  has: (_, key) => key in load(),
  ownKeys: () => Reflect.ownKeys(load()),
  getOwnPropertyDescriptor: (_, key) => {
    const descriptor = Object.getOwnPropertyDescriptor(load(), key);
    return descriptor && { ...descriptor, configurable: true };
  },
});
`,
      }));
    },
  };
}

/**
 * esbuild options. keepNames: the storage SDKs recognise their own policy factories and
 * credentials by `constructor.name` (e.g. "StorageSharedKeyCredential"), and scope hoisting
 * renames classes whose names collide in the bundle (without keepNames that class is
 * "StorageSharedKeyCredential2"), which would break the check. It costs about 10 % of the
 * bundle's load time. Identifiers are not minified, so stack traces name the functions of the
 * sources; minifying whitespace and syntax only saves bytes.
 */
export function esbuildOptions(entry, outfile, { appDir, defer = true } = {}) {
  return {
    plugins: defer ? [deferredImports(appDir)] : [],
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: "node",
    target: "node20",
    format: "cjs",
    external: EXTERNALS,
    keepNames: true,
    minifyWhitespace: true,
    minifySyntax: true,
    sourcemap: "linked",
    metafile: true,
    logLevel: "silent",
  };
}

const readJson = (file) => JSON.parse(readFileSync(file, "utf8"));

/** The folder of an installed package as Node would find it from `fromDir` (node_modules lookup). */
function packageDir(name, fromDir, root) {
  for (let dir = fromDir; ; dir = dirname(dir)) {
    const candidate = join(dir, "node_modules", ...name.split("/"));
    if (existsSync(join(candidate, "package.json"))) return candidate;
    if (dir === root || dirname(dir) === dir) break;
  }
  throw new Error(`bundle: ${name} is not installed (run npm ci)`);
}

/** The externals and their production dependencies, each once: name → installed folder. */
function externalClosure(root) {
  const found = new Map();
  const visit = (name, fromDir) => {
    const dir = packageDir(name, fromDir, root);
    const pkg = readJson(join(dir, "package.json"));
    const seen = found.get(name);
    if (seen) {
      // deploy/node_modules is flat: two versions of one package would need nesting, which no
      // external needs today.
      if (seen.version !== pkg.version) {
        throw new Error(`bundle: ${name} is needed at ${seen.version} and ${pkg.version}; deploy/node_modules is flat`);
      }
      return;
    }
    found.set(name, { dir, version: pkg.version });
    for (const dep of Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies })) visit(dep, dir);
  };
  for (const name of EXTERNALS) visit(name, root);
  return found;
}

/** The installed packages the bundle took code from: folder → {name, version, license}. */
function bundledPackages(root, metafile) {
  const packages = new Map();
  for (const input of Object.keys(metafile.inputs)) {
    const parts = input.split(/[\\/]/);
    const at = parts.lastIndexOf("node_modules");
    if (at < 0) continue;
    const depth = parts[at + 1]?.startsWith("@") ? 2 : 1;
    const dir = join(root, ...parts.slice(0, at + 1 + depth));
    if (packages.has(dir)) continue;
    const pkg = readJson(join(dir, "package.json"));
    packages.set(dir, { name: pkg.name, version: pkg.version, license: typeof pkg.license === "string" ? pkg.license : "see the package" });
  }
  return packages;
}

/** One text with each bundled package's licence file (MIT and the like require the notice to travel with the code). */
function thirdPartyNotices(packages) {
  const sections = [...packages].sort(([, a], [, b]) => a.name.localeCompare(b.name)).map(([dir, p]) => {
    const file = readdirSync(dir).find((f) => /^(licen[sc]e|copying)([.-][\w.-]*)?$/i.test(f));
    const text = file ? readFileSync(join(dir, file), "utf8").trim() : `No licence file in the package; its package.json says: ${p.license}`;
    return `${p.name}@${p.version} (${p.license})\n\n${text}\n`;
  });
  return `Third-party code bundled into ${BUNDLE_FILE}, with each package's licence.\n\n${sections.join(`\n${"-".repeat(80)}\n\n`)}`;
}

/** Refuses to empty a folder that holds the repository or lies above it. */
function assertSafeOutDir(outDir, root) {
  const rel = relative(outDir, root);
  const outside = rel === ".." || rel.startsWith(`..${sep}`) || isAbsolute(rel);
  if (!outside) throw new Error(`bundle: refusing to empty ${outDir}: it holds the repository`);
}

/**
 * Builds the deployment folder. Returns what it made, for the bench and the smoke test.
 * @param {{ root?: string, outDir?: string, build?: boolean, defer?: boolean, log?: (line: string) => void }} [options]
 */
export async function bundle({ root = ROOT, outDir = join(root, "deploy"), build = true, defer = true, log = (line) => console.log(line) } = {}) {
  const started = performance.now();
  outDir = resolve(outDir);
  assertSafeOutDir(outDir, root);
  if (build) execFileSync(process.execPath, [join(root, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.json"], { cwd: root, stdio: "inherit" });

  const rootPkg = readJson(join(root, "package.json"));
  const entry = join(root, rootPkg.main);
  if (!existsSync(entry)) throw new Error(`bundle: ${rootPkg.main} is missing: run \`npm run build\` first`);

  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  const outfile = join(outDir, BUNDLE_FILE);
  const { build: esbuild } = await import("esbuild");
  // absWorkingDir: the metafile's input paths are relative to it (bundledPackages).
  const result = await esbuild({ ...esbuildOptions(entry, outfile, { appDir: dirname(dirname(entry)), defer }), absWorkingDir: root });
  for (const warning of result.warnings) log(`bundle: warning: ${warning.text}${warning.location ? ` (${warning.location.file}:${warning.location.line})` : ""}`);

  for (const asset of ASSETS) cpSync(join(root, asset.from), join(outDir, asset.to), { recursive: true });

  const dependencies = {};
  for (const name of EXTERNALS) {
    const version = rootPkg.dependencies?.[name];
    if (!/^\d+\.\d+\.\d+/.test(version ?? "")) throw new Error(`bundle: ${name} needs an exact version in package.json dependencies, found ${version}`);
    dependencies[name] = version;
  }
  const closure = externalClosure(root);
  for (const name of EXTERNALS) {
    const installed = closure.get(name)?.version;
    if (installed !== dependencies[name]) throw new Error(`bundle: node_modules has ${name} ${installed}, package.json says ${dependencies[name]}: run npm ci`);
  }
  for (const [name, { dir }] of closure) cpSync(dir, join(outDir, "node_modules", ...name.split("/")), { recursive: true, dereference: true });

  const pkg = {
    name: rootPkg.name,
    version: rootPkg.version,
    description: rootPkg.description,
    license: rootPkg.license,
    private: true,
    main: BUNDLE_FILE,
    engines: rootPkg.engines,
    dependencies,
  };
  writeFileSync(join(outDir, "package.json"), `${JSON.stringify(pkg, null, 2)}\n`);
  cpSync(join(root, "host.json"), join(outDir, "host.json"));
  const packages = bundledPackages(root, result.metafile);
  writeFileSync(join(outDir, "THIRD-PARTY-NOTICES.txt"), thirdPartyNotices(packages));
  writeFileSync(
    join(outDir, ".funcignore"),
    "# The source map serves to read stack traces offline (it names the TypeScript sources); the app does not load it.\n" +
      "*.map\n**/*.map\n# Type declarations of @azure/functions: nothing runs them.\n*.ts\n**/*.ts\n/.funcignore\n",
  );

  const bytes = statSync(outfile).size;
  const gzipBytes = gzipSync(readFileSync(outfile)).length;
  const mapBytes = statSync(`${outfile}.map`).size;
  const modules = Object.keys(result.metafile.inputs).length;
  const ms = performance.now() - started;
  const mb = (n) => `${(n / 1024 / 1024).toFixed(2)} MB`;
  log(
    `bundle: ${outfile.startsWith(root + sep) ? relative(root, outfile) : outfile} ${mb(bytes)} (${mb(gzipBytes)} gzipped), ${modules} modules from ${packages.size} packages; ` +
      `source map ${mb(mapBytes)} (not published); external: ${EXTERNALS.map((n) => `${n}@${dependencies[n]}`).join(", ")} in node_modules/ ` +
      `(${closure.size} packages); ${defer ? "the app's imports load on first use" : "everything loads with the entry (--eager)"}; ${(ms / 1000).toFixed(1)} s`,
  );
  return { outDir, main: outfile, bytes, gzipBytes, mapBytes, modules, packages: packages.size, ms };
}

function parseArgs(argv) {
  const opts = { build: true, defer: true, outDir: undefined };
  for (let i = 0; i < argv.length; i++) {
    const [name, inline] = argv[i].split("=", 2);
    if (name === "--no-build") opts.build = false;
    else if (name === "--eager") opts.defer = false;
    else if (name === "--out") opts.outDir = inline ?? argv[++i];
    else {
      console.error(`unknown option ${argv[i]}\nusage: node scripts/bundle.mjs [--out DIR] [--no-build] [--eager]`);
      process.exit(2);
    }
    if (name === "--out" && !opts.outDir) {
      console.error("--out needs a folder");
      process.exit(2);
    }
  }
  return opts;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const opts = parseArgs(process.argv.slice(2));
  bundle({ build: opts.build, defer: opts.defer, ...(opts.outDir ? { outDir: opts.outDir } : {}) }).catch((error) => {
    console.error(error?.stack ?? String(error));
    process.exit(1);
  });
}
