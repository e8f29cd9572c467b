/**
 * The suite-wide secret registry and the scanner behind the after-each secrecy check
 * (test/harness/secrecy.setup.ts).
 *
 * - Whatever creates a secret registers a provider: the test environment (client secret, vault
 *   token), the fake Entra (every code, access, id and refresh token it issued), the fake Key Vault
 *   (its accepted token and every value stored in it), the Splunk HEC, Event Hubs and Logs
 *   Ingestion fakes (their tokens), the webhook receiver (the signed URLs it hands out).
 *   Providers are called at scan time, so secrets issued later in a file are still found.
 * - The harness records what the app (and the test) produced: HTTP responses through
 *   `app.http`, `context.log` lines, lines swallowed by `captureConsole`; the setup file adds
 *   stdout/stderr/console and every table entity, queue message and blob written to Azurite.
 * - `findSecrets` scans those records; a finding names the source and location and shows a
 *   secret only as a fingerprint (first 4 characters and length), never whole.
 *
 * No vitest import: the fakes import this, and they are also compiled for the local bench
 * (test/fakes/tsconfig.bench.json). State lives on globalThis because vitest and native
 * `require` (dist-bench) may each load their own copy of this module in one process.
 */

export interface CapturedOutput {
  /** What produced it: "stdout", "stderr", "console.error", "context.log", "http response", "table", "queue", "blob"… */
  source: string;
  /** Where within that source: the function and request, the table and entity, the blob name… */
  where: string;
  text: string;
  /** "test" while a test body runs, otherwise a description of the hooks around it. */
  phase: string;
}

export interface SecretProvider {
  label: string;
  provider: () => Iterable<string>;
}

export interface KnownSecret {
  value: string;
  /** Which provider(s) registered it, e.g. "fake Entra issued token". */
  label: string;
}

export interface Finding {
  secret: KnownSecret;
  /** Which form matched: "as is", "URL-encoded", "JSON-escaped". */
  form: string;
  output: CapturedOutput;
  /** 1-based line of the first match in `output.text`. */
  line: number;
  /** Text around the match with every known secret replaced by its fingerprint. */
  excerpt: string;
}

interface SecrecyState {
  providers: SecretProvider[];
  outputs: CapturedOutput[];
  /** Only a process whose setup file turned recording on keeps outputs (never a local bench/dev server). */
  recording: boolean;
  phase: string;
}

const STATE_KEY = Symbol.for("mssp-defender-connector.test.secrecy");

function state(): SecrecyState {
  const holder = globalThis as unknown as Record<symbol, SecrecyState | undefined>;
  let current = holder[STATE_KEY];
  if (current === undefined) {
    current = { providers: [], outputs: [], recording: false, phase: "test" };
    holder[STATE_KEY] = current;
  }
  return current;
}

/** Shorter values are too likely to occur by chance (the same floor as secretsOf). */
export const MIN_SECRET_LENGTH = 8;

/**
 * Registers a source of secrets for the after-each scan of this process (one test file).
 * `provider` is called at every scan; return every value that must never appear in output.
 * Returns an unregister function (rarely needed: a secret stays a secret after its fake stops).
 */
export function registerSecrets(provider: () => Iterable<string>, label = "registered secret"): () => void {
  const entry: SecretProvider = { label, provider };
  state().providers.push(entry);
  return () => {
    const providers = state().providers;
    const index = providers.indexOf(entry);
    if (index >= 0) providers.splice(index, 1);
  };
}

/** Every registered secret (deduplicated, at least MIN_SECRET_LENGTH long), longest first. */
export function knownSecrets(): KnownSecret[] {
  const byValue = new Map<string, Set<string>>();
  for (const { label, provider } of state().providers) {
    let values: Iterable<string>;
    try {
      values = provider();
    } catch {
      continue; // a provider whose fake is gone has nothing new to say
    }
    for (const value of values) {
      if (typeof value !== "string" || value.length < MIN_SECRET_LENGTH) continue;
      let labels = byValue.get(value);
      if (labels === undefined) byValue.set(value, (labels = new Set()));
      labels.add(label);
    }
  }
  return [...byValue]
    .map(([value, labels]) => ({ value, label: [...labels].join(", ") }))
    .sort((a, b) => b.value.length - a.value.length);
}

export function hasRegisteredSecrets(): boolean {
  return state().providers.length > 0;
}

/** Turns recording of outputs on or off (the setup file turns it on for every test file). */
export function setRecording(on: boolean): void {
  state().recording = on;
  if (!on) state().outputs.length = 0;
}

export function isRecording(): boolean {
  return state().recording;
}

/** Labels outputs recorded from now on ("test", or e.g. "beforeAll/afterAll hooks"). */
export function setPhase(phase: string): void {
  state().phase = phase;
}

/** Keeps `text` for the next scan; a no-op unless recording. */
export function recordOutput(source: string, where: string, text: string | Uint8Array): void {
  const current = state();
  if (!current.recording) return;
  const asText = typeof text === "string" ? text : Buffer.from(text.buffer, text.byteOffset, text.byteLength).toString("utf8");
  if (asText.length === 0) return;
  current.outputs.push({ source, where, text: asText, phase: current.phase });
}

/** Everything recorded since the previous drain. */
export function drainOutputs(): CapturedOutput[] {
  return state().outputs.splice(0);
}

/** How a secret is shown in a failure: never whole. */
export function fingerprint(secret: string): string {
  return `«${secret.slice(0, 4)}… ${secret.length} chars»`;
}

function forms(secret: string): Array<[string, string]> {
  const result: Array<[string, string]> = [["as is", secret]];
  const urlEncoded = encodeURIComponent(secret);
  if (urlEncoded !== secret) result.push(["URL-encoded", urlEncoded]);
  const jsonEscaped = JSON.stringify(secret).slice(1, -1);
  if (jsonEscaped !== secret) result.push(["JSON-escaped", jsonEscaped]);
  return result;
}

/** Replaces every known secret (in each form) in `text` by its fingerprint. */
export function redact(text: string, secrets: readonly KnownSecret[]): string {
  let out = text;
  for (const secret of secrets) {
    for (const [, form] of forms(secret.value)) if (out.includes(form)) out = out.split(form).join(fingerprint(secret.value));
  }
  return out;
}

function excerptAround(text: string, index: number, length: number, secrets: readonly KnownSecret[]): string {
  const start = Math.max(0, index - 60);
  const end = Math.min(text.length, index + length + 60);
  const raw = text.slice(start, end);
  return `${start > 0 ? "…" : ""}${redact(raw, secrets).replace(/\s+/g, " ")}${end < text.length ? "…" : ""}`;
}

/**
 * Finds every known secret in the outputs (at most one finding per secret and output).
 * Each output is searched once per secret form with `String.prototype.includes`.
 */
export function findSecrets(secrets: readonly KnownSecret[], outputs: readonly CapturedOutput[]): Finding[] {
  const findings: Finding[] = [];
  if (secrets.length === 0) return findings;
  const searched = secrets.map((secret) => ({ secret, forms: forms(secret.value) }));
  for (const output of outputs) {
    for (const { secret, forms: secretForms } of searched) {
      for (const [form, value] of secretForms) {
        const index = output.text.indexOf(value);
        if (index >= 0) {
          const line = output.text.slice(0, index).split("\n").length;
          findings.push({ secret, form, output, line, excerpt: excerptAround(output.text, index, value.length, secrets) });
          break;
        }
        // A secret in the location itself: a blob name, a row key, a request path.
        const inWhere = output.where.indexOf(value);
        if (inWhere >= 0) {
          findings.push({ secret, form, output, line: 0, excerpt: excerptAround(output.where, inWhere, value.length, secrets) });
          break;
        }
      }
    }
  }
  return findings;
}

/** The failure message: the test, then per finding the secret's fingerprint and provider, the source and the location. */
export function describeFindings(testName: string, findings: readonly Finding[], secrets: readonly KnownSecret[]): string {
  const lines = [`Secrecy: ${findings.length} secret leak(s) in output of "${testName}":`];
  for (const finding of findings.slice(0, 20)) {
    const { output } = finding;
    const place = finding.line === 0 ? "in its name/location" : `line ${finding.line}`;
    lines.push(
      `  - ${fingerprint(finding.secret.value)} (${finding.secret.label}${finding.form === "as is" ? "" : `, ${finding.form}`})` +
        ` in ${output.source} [${redact(output.where, secrets)}] ${place}` +
        `${output.phase === "test" ? "" : ` (written ${output.phase})`}: ${finding.excerpt}`,
    );
  }
  if (findings.length > 20) lines.push(`  … and ${findings.length - 20} more`);
  return lines.join("\n");
}
