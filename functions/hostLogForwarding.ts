import type { Logger, LoggerProvider } from "@opentelemetry/api-logs";

/**
 * Each structured log line is exported twice if nothing stops it: once as its own record with
 * the fields as attributes (loggerFor), and once more when the Functions instrumentation's log
 * hook turns the context.log text of the same line into a record without attributes. The
 * instrumentation is kept for every other context.log line (start-up checks, unhandled
 * failures), so the lines loggerFor has already exported are marked while they pass the hook.
 * Worker log hooks run synchronously inside context.log, so a counter is enough.
 */
let markedLines = 0;

/** Runs a context.log call whose line is already exported as a structured record. */
export function alreadyExported(write: () => void): void {
  markedLines += 1;
  try {
    write();
  } finally {
    markedLines -= 1;
  }
}

/** The provider handed to the instrumentation: its records are dropped while a line is marked. */
export function skippingExportedLines(provider: LoggerProvider): LoggerProvider {
  return {
    getLogger(name, version, options): Logger {
      const logger = provider.getLogger(name, version, options);
      return {
        emit(record) {
          if (markedLines === 0) logger.emit(record);
        },
        enabled: (options) => markedLines === 0 && logger.enabled(options),
      };
    },
  };
}
