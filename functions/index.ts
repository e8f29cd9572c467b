// The app's entry point (package.json "main"): importing a module registers its functions.
// functions/settingsGuard.ts (imported through ./runtime) adds the app start hook that validates the settings.
// Telemetry first: it starts the OpenTelemetry SDK when APPLICATIONINSIGHTS_CONNECTION_STRING is set.
import "./telemetry";
import "./tenantsApi";
import "./consent";
import "./pull";
import "./housekeeping";
import "./console";
import "./health";
