// `npm run bench -- --pin[=apart|together]`: the bench's processes held to chosen CPUs, for steadier figures.
// Unpinned, the fakes and Azurite run beside the app on the same two cores, and the scheduler moves
// them all around. `apart` (the default) keeps the app on CPU 0 and the services on the others: the
// wall-clock rates are the app's with the services never waiting for its core. `together` puts
// everything on CPU 0: nothing runs at the same time as the app, so its CPU time is its own work
// alone. How much that changes the figures depends on the machine (docs/performance.md, Pinned runs).
// Linux only (taskset, from util-linux).
import { execFileSync } from "node:child_process";
import { availableParallelism } from "node:os";

const ENV = "BENCH_PIN";

/** The CPU lists, or undefined when --pin was not given (forked children read it from the environment). */
export function pinning() {
  const value = process.env[ENV];
  return value ? JSON.parse(value) : undefined;
}

/** The modes --pin takes. */
export const PIN_MODES = ["apart", "together"];

/**
 * Pins this process (and so every child it forks afterwards) to CPU 0 and records where the
 * services go: CPUs 1..n-1 (`apart`) or CPU 0 too (`together`). Throws a sentence for the user
 * when the machine cannot.
 */
export function pinThisProcess(mode) {
  const cpus = availableParallelism();
  if (mode === "apart" && cpus < 2) throw new Error(`--pin=apart needs at least two CPUs (this machine has ${cpus}); --pin=together does not`);
  const lists = { mode, app: "0", services: mode === "together" ? "0" : cpus === 2 ? "1" : `1-${cpus - 1}` };
  taskset(process.pid, lists.app);
  process.env[ENV] = JSON.stringify(lists);
  return lists;
}

/** Moves a service's process (all its threads) to the services' CPUs; nothing without --pin. */
export function pinService(pid) {
  const lists = pinning();
  if (lists && pid !== undefined) taskset(pid, lists.services);
}

function taskset(pid, list) {
  try {
    // -a: every thread (V8's and libuv's helpers too), not just the main one.
    execFileSync("taskset", ["-a", "-p", "-c", list, String(pid)], { stdio: ["ignore", "ignore", "pipe"] });
  } catch (error) {
    const why = error?.code === "ENOENT" ? "taskset is not installed (apt-get install util-linux)" : String(error?.stderr ?? error?.message ?? error).trim();
    throw new Error(`--pin could not pin process ${pid} to CPU ${list}: ${why}`);
  }
}
