/**
 * The Event Hubs sink's two settings. Only names are configured, never a key or connection
 * string: the app authenticates with its managed identity (role Azure Event Hubs Data Sender on
 * the hub), and the namespace has local (key) auth turned off.
 */
export interface EventHubsSettings {
  /** `contoso.servicebus.windows.net`: the namespace's host name, no scheme, port or path. */
  fullyQualifiedNamespace: string;
  /** The event hub inside that namespace. */
  eventHubName: string;
}

export const EVENTHUB_SETTING_NAMES = ["EVENTHUB_FULLY_QUALIFIED_NAMESPACE", "EVENTHUB_NAME"] as const;

/**
 * Every problem found, each a sentence that starts with the setting it is about and never quotes
 * the value (a pasted connection string would carry a key): `problems` can go straight into the
 * app's own list of configuration problems.
 */
export class EventHubsSettingsError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`Invalid Event Hubs settings:\n- ${problems.join("\n- ")}`);
    this.name = "EventHubsSettingsError";
  }
}

/** One DNS label: letters, digits and inner hyphens (host names are case-insensitive). */
const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/i;
/** Azure's rule for an event hub's name: 1-256 letters, digits, `.`, `-`, `_`, starting and ending alphanumeric. */
const HUB_NAME = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,254}[A-Za-z0-9])?$/;

type Env = Readonly<Record<string, string | undefined>>;

function namespaceProblem(value: string): string | undefined {
  const name = "EVENTHUB_FULLY_QUALIFIED_NAMESPACE";
  // A connection string or SAS here means someone meant to use keys: say why that cannot work.
  if (/(^|;)\s*(Endpoint|SharedAccess\w*|EntityPath)\s*=/i.test(value)) {
    return `${name} must be the namespace's host name only, not a connection string: the app signs in with its managed identity`;
  }
  if (value.includes("://") || /[/:?#@\s]/.test(value)) {
    return `${name} must be a host name such as contoso.servicebus.windows.net, without scheme, port or path`;
  }
  const labels = value.split(".");
  if (labels.length < 2 || value.length > 253 || !labels.every((label) => LABEL.test(label))) {
    return `${name} must be a host name such as contoso.servicebus.windows.net`;
  }
  return undefined;
}

/** Reads and checks both settings; throws EventHubsSettingsError listing every problem at once. */
export function parseEventHubsSettings(env: Env): EventHubsSettings {
  const problems: string[] = [];
  const fullyQualifiedNamespace = env["EVENTHUB_FULLY_QUALIFIED_NAMESPACE"]?.trim() ?? "";
  const eventHubName = env["EVENTHUB_NAME"]?.trim() ?? "";
  if (!fullyQualifiedNamespace) {
    problems.push("EVENTHUB_FULLY_QUALIFIED_NAMESPACE is required (the namespace's host name, e.g. contoso.servicebus.windows.net)");
  } else {
    const problem = namespaceProblem(fullyQualifiedNamespace);
    if (problem) problems.push(problem);
  }
  if (!eventHubName) {
    problems.push("EVENTHUB_NAME is required (the event hub's name inside the namespace)");
  } else if (!HUB_NAME.test(eventHubName)) {
    problems.push("EVENTHUB_NAME must be 1-256 letters, digits, periods, hyphens or underscores, starting and ending with a letter or digit");
  }
  if (problems.length > 0) throw new EventHubsSettingsError(problems);
  return { fullyQualifiedNamespace: fullyQualifiedNamespace.toLowerCase(), eventHubName };
}
