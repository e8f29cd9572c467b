// The app's entry point (package.json "main"): importing a module registers its functions.
// functions/settingsGuard.ts (imported through ./runtime) adds the app start hook that validates the settings.
import "./tenantsApi";
import "./consent";
import "./pull";
import "./console";
import "./health";
