import type { TokenCredential } from "@azure/identity";
import type { Logger } from "../logging";
import type { AlertSink } from "./alertSink";
import { createEventHubsProducer, EventHubsAlertSink } from "./eventhubs/eventHubsSink";
import { createSentinelSink } from "./sentinel/sentinelSink";
import type { SinkConfig } from "./sinkConfig";
import type { NamedSink } from "./sinkSet";
import { SplunkHecSink } from "./splunk/splunkHecSink";

export interface SinkFactoryDeps {
  /** The blob sink (it needs the app's storage wiring, which the caller has). */
  blob: () => AlertSink;
  /** The app's managed identity (Sentinel, Event Hubs). */
  credential: () => TokenCredential;
  /** Local development and tests only: the fakes' CA. */
  caPem?: string;
  logger?: Logger;
}

/** The sinks ALERT_SINKS names, in its documented order, each built from its own settings. */
export function buildSinks(config: SinkConfig, deps: SinkFactoryDeps): NamedSink[] {
  return config.names.map((name): NamedSink => {
    switch (name) {
      case "blob":
        return { name, sink: deps.blob() };
      case "sentinel": {
        if (!config.sentinel) throw new Error("ALERT_SINKS names sentinel but its settings were not read");
        return { name, sink: createSentinelSink(config.sentinel, deps.credential(), deps.caPem ? { localDevCaPem: deps.caPem } : {}) };
      }
      case "splunk": {
        if (!config.splunk) throw new Error("ALERT_SINKS names splunk but its settings were not read");
        return {
          name,
          sink: new SplunkHecSink(config.splunk, { ...(deps.caPem ? { caPem: deps.caPem } : {}), ...(deps.logger ? { logger: deps.logger } : {}) }),
        };
      }
      case "eventhubs": {
        if (!config.eventHubs) throw new Error("ALERT_SINKS names eventhubs but its settings were not read");
        return { name, sink: new EventHubsAlertSink(createEventHubsProducer(config.eventHubs, deps.credential())) };
      }
    }
  });
}
