import { PUBLIC_BASE_URL, startFakeStack } from "./fakeStack";

/**
 * Runs the HTTPS fakes (Entra ID, Key Vault, Defender, Microsoft Graph) in their own process, for the
 * benchmark: `node dist-bench/test/fakes/serveFakes.js --latency-ms 100`.
 * Prints one JSON line with everything a client needs, then serves until SIGINT/SIGTERM or
 * until its stdin closes (the parent went away). The fakes are driven through their
 * /_fake/ control routes.
 */

export { PUBLIC_BASE_URL };

function numberArg(argv: readonly string[], name: string, fallback: number): number {
  const at = argv.indexOf(name);
  const raw = at >= 0 ? argv[at + 1] : argv.find((a) => a.startsWith(`${name}=`))?.slice(name.length + 1);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name} must be a non-negative number`);
  return value;
}

export async function serveFakes(argv: readonly string[] = process.argv.slice(2)): Promise<void> {
  const latencyMs = numberArg(argv, "--latency-ms", 100);
  // The benchmark measures the app: the fake keeps no per-version bookkeeping for it.
  const stack = await startFakeStack({ defenderLatencyMs: latencyMs, recordServed: false });
  const { entra, vault, defender, graph, clientId, clientSecret, msspTenantId, vaultToken } = stack;

  let stopping = false;
  const stop = (code: number): void => {
    if (stopping) return;
    stopping = true;
    const force = setTimeout(() => process.exit(code), 3_000);
    force.unref();
    void stack.stop().then(() => process.exit(code));
  };
  process.once("SIGINT", () => stop(0));
  process.once("SIGTERM", () => stop(0));
  // The parent holds our stdin; when it dies (even by SIGKILL) the pipe closes and we follow.
  if (!process.stdin.isTTY) {
    process.stdin.on("end", () => stop(0));
    process.stdin.on("error", () => stop(0));
    process.stdin.resume();
  }

  process.stdout.write(
    `${JSON.stringify({
      entraUrl: entra.url,
      vaultUrl: vault.url,
      defenderUrl: defender.url,
      graphUrl: graph.url,
      certFile: stack.certFile,
      clientId,
      clientSecret,
      msspTenantId,
      vaultToken,
      latencyMs,
      publicBaseUrl: PUBLIC_BASE_URL,
      pid: process.pid,
    })}\n`,
  );
}

if (require.main === module) {
  serveFakes().catch((err: unknown) => {
    process.stderr.write(`serveFakes: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
