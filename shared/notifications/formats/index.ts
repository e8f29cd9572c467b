import type { NotifyFormat } from "../../config";
import type { MessageInput } from "./digest";
import { jsonMessage } from "./json";
import { slackMessage } from "./slack";
import { teamsMessage } from "./teams";

export type { MessageInput } from "./digest";

const BUILDERS: Record<NotifyFormat, (input: MessageInput) => Record<string, unknown>> = {
  json: jsonMessage,
  slack: slackMessage,
  teams: teamsMessage,
};

/** The request body of one webhook message for the whole batch, in NOTIFY_WEBHOOK_FORMAT. */
export function buildMessage(format: NotifyFormat, input: MessageInput): string {
  return JSON.stringify(BUILDERS[format](input));
}
