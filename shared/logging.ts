/**
 * The logging port the core writes to. Fields are structured so that call sites name exactly
 * what they log; nothing in shared/ ever passes a token, code or secret into a field.
 */
export type LogFields = Readonly<Record<string, string | number | boolean | null | undefined>>;

export interface Logger {
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
}

export const silentLogger: Logger = { info() {}, warn() {}, error() {} };
