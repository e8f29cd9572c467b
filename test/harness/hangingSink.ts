import { SinkError, type AlertSink } from "../../shared/sinks/alertSink";

/**
 * A sink that never answers, as one whose socket stays open would: each write ends only when the
 * pull's own signal gives it up, failing as a write with no HTTP response. `abandoned` counts those.
 */
export function hangingSink(): { sink: AlertSink; abandoned: () => number } {
  let abandoned = 0;
  const sink: AlertSink = {
    write: (_key, _alerts, options) =>
      new Promise((_resolve, reject) => {
        options?.signal?.addEventListener("abort", () => {
          abandoned++;
          reject(new SinkError("Uploading the alert batch failed (no HTTP response)"));
        });
      }),
  };
  return { sink, abandoned: () => abandoned };
}
