/** The version every service registers and reports. */
export const VERSION = "0.3.0";
