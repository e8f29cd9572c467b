/**
 * What every entry point does when the app settings are invalid: fail visibly, by setting name,
 * and never with a value. The full list of problems is logged once per process (at app start,
 * or by the first invocation that meets it when no start hook ran); each refused invocation then
 * logs one line with the names, so the reference on a page or in a 503 leads to a log line.
 */
import { ConfigError, DEFAULT_MSSP_DISPLAY_NAME, loadConfig } from "../config";
import { renderPage } from "../consent/pages";
import { messagePage } from "../console/views";
import { html, type HtmlPage } from "../ui/page";

export const MISCONFIGURED = "misconfigured";

/** The operator API's 503 body: the names of the settings to fix, never their values. */
export interface MisconfiguredBody {
  error: { code: typeof MISCONFIGURED; settings: string[]; message: string };
}

export function misconfiguredBody(error: ConfigError, reference: string): MisconfiguredBody {
  const names = error.settings.length > 0 ? error.settings.join(", ") : "(see the function logs)";
  return {
    error: {
      code: MISCONFIGURED,
      settings: [...error.settings],
      message:
        `The app settings are missing or invalid: ${names}. Fix them in the function app's configuration; ` +
        `the function logs say what is wrong with each (invocation id ${reference}).`,
    },
  };
}

/** The one log line of a refused invocation. */
export function refusalLine(error: ConfigError, what: string): string {
  return `misconfigured: ${what} refused until these app settings are fixed: ${error.settings.join(", ") || "(unnamed)"}`;
}

/** The full report: every problem, by name, one per line (messages never carry a value). */
export function fullReport(error: ConfigError): string {
  return `app settings are invalid (${error.problems.length} problem${error.problems.length === 1 ? "" : "s"}), every function refuses work until they are fixed:\n- ${error.problems.join("\n- ")}`;
}

let reported = false;

/**
 * Logs the full report unless this process already did. Returns whether it logged. The flag is
 * per process, like the host's app start, so each worker instance reports once.
 */
export function reportOnce(error: ConfigError, log: (line: string) => void): boolean {
  if (reported) return false;
  reported = true;
  log(fullReport(error));
  return true;
}

/** The settings' problems, or undefined when they are valid. */
export function settingsProblem(env: Readonly<Record<string, string | undefined>> = process.env): ConfigError | undefined {
  try {
    loadConfig(env);
    return undefined;
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
}

/** The app-start check: validates the settings and reports every problem once, as an error. */
export function checkSettingsAtStart(log: (line: string) => void, env: Readonly<Record<string, string | undefined>> = process.env): ConfigError | undefined {
  const error = settingsProblem(env);
  if (error) reportOnce(error, log);
  return error;
}

/** A display name for the pages even when other settings are broken (MSSP_DISPLAY_NAME alone, if sane). */
function msspName(env: Readonly<Record<string, string | undefined>>): string {
  const value = env["MSSP_DISPLAY_NAME"]?.trim();
  return value && value.length <= 100 && !/[\u0000-\u001f\u007f-\u009f]/.test(value) ? value : DEFAULT_MSSP_DISPLAY_NAME;
}

/**
 * The page a customer's admin (consent) or an operator (console) gets: the service is
 * misconfigured, nothing was changed, and a reference. No setting names: these routes are
 * anonymous, and the console's sign-in gate itself depends on the settings.
 */
export function misconfiguredPage(
  reference: string,
  audience: "consent" | "console",
  env: Readonly<Record<string, string | undefined>> = process.env,
): HtmlPage {
  const name = msspName(env);
  const title = "This service is misconfigured";
  if (audience === "console") {
    return messagePage({ msspName: name, sandbox: false, now: Date.now() }, 503, title, [
      "The console cannot work until the function app's settings are fixed. Nothing was changed.",
      "The function logs name every setting to fix (GET /api/health shows which part fails). This request's reference:",
      html`<code>${reference}</code>`,
    ]);
  }
  return renderPage(
    503,
    {
      title,
      paragraphs: [
        `This consent service cannot work until ${name} fixes its configuration. Nothing was changed.`,
        `Please open your consent link again later. If it keeps failing, give ${name} this reference:`,
      ],
      details: [["Reference", reference]],
    },
    { msspName: name },
  );
}
