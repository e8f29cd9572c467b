import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ensureFreshBuild, type Build } from "../harness/freshBuild";

const BUILD: Build = { name: "build", tsconfig: "tsconfig.json", sources: ["shared"], output: "dist/index.js" };
const roots: string[] = [];
afterEach(() => {
  for (const root of roots.splice(0)) rmSync(root, { recursive: true, force: true });
});

/** A project with one source and one output, each with the given modification time (s). */
function project(sourceAt: number, outputAt: number | undefined): string {
  const root = mkdtempSync(join(tmpdir(), "fresh-build-"));
  roots.push(root);
  mkdirSync(join(root, "shared", "pull"), { recursive: true });
  writeFileSync(join(root, "shared", "pull", "tenantPull.ts"), "export {};\n");
  writeFileSync(join(root, "shared", "pull", "tenantPull.test.ts"), "export {};\n");
  utimesSync(join(root, "shared", "pull", "tenantPull.ts"), sourceAt, sourceAt);
  // A test file is not a source of the build: its time never matters.
  utimesSync(join(root, "shared", "pull", "tenantPull.test.ts"), 9_000_000_000, 9_000_000_000);
  if (outputAt !== undefined) {
    mkdirSync(join(root, "dist"), { recursive: true });
    writeFileSync(join(root, "dist", "index.js"), "");
    utimesSync(join(root, "dist", "index.js"), outputAt, outputAt);
  }
  return root;
}

describe("the test setup's build check", () => {
  it("builds when a source is newer than the build, or there is no build", () => {
    for (const root of [project(2_000_000, 1_000_000), project(1_000_000, undefined)]) {
      const compiled: string[] = [];
      expect(ensureFreshBuild(root, [BUILD], (_root, tsconfig) => compiled.push(tsconfig))).toEqual(["build"]);
      expect(compiled).toEqual(["tsconfig.json"]);
    }
  });

  it("leaves a build alone that is newer than every source", () => {
    const compiled: string[] = [];
    expect(ensureFreshBuild(project(1_000_000, 2_000_000), [BUILD], (_root, tsconfig) => compiled.push(tsconfig))).toEqual([]);
    expect(compiled).toEqual([]);
  });

  it("lets a failing build stop the run", () => {
    const failing = (): void => {
      throw new Error("tsc exited with code 2");
    };
    expect(() => ensureFreshBuild(project(2_000_000, 1_000_000), [BUILD], failing)).toThrow("tsc exited with code 2");
  });
});
