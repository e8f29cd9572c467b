/** The app's version, sent in the Defender partner User-Agent. A test keeps it equal to package.json. */
export const APP_VERSION = "0.1.0";
