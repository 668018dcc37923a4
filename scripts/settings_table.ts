/**
 * Prints every setting as a Markdown table, from `services/config.ts`, for the
 * README (`deno task settings`). A test keeps the README's copy current.
 */
import { listSettings } from "../shared/config/setting.ts";
import { settings } from "../services/config.ts";

export function settingsTable(): string {
  const escape = (text: string) => text.replaceAll("|", "\\|");
  const rows = listSettings(settings).map((setting) => {
    const value = setting.format(setting.default);
    return `| \`${setting.env}\` | ${value === "" ? "(empty)" : `\`${escape(value)}\``} | ${
      escape(setting.doc)
    } |`;
  });
  return ["| Variable | Default | Meaning |", "| --- | --- | --- |", ...rows].join("\n");
}

if (import.meta.main) {
  Deno.stdout.writeSync(new TextEncoder().encode(settingsTable() + "\n"));
}
