/**
 * A real browser for page tests: Debian's chromium driven by playwright-core,
 * headless, and screenshots under .data/screenshots/.
 */
import { type BrowserContext, chromium, type Page } from "playwright-core";

const CHROMIUM = "/usr/bin/chromium";
const SCREENSHOTS = new URL("../../.data/screenshots/", import.meta.url).pathname;

/** A fresh headless chromium profile (`prefix` names its temporary folder). */
export async function headlessChromium(prefix: string): Promise<BrowserContext> {
  try {
    await Deno.stat(CHROMIUM);
  } catch {
    throw new Error(`${CHROMIUM} is missing: apt-get install -y chromium (deno task test does)`);
  }
  const dir = await Deno.makeTempDir({ prefix: `${prefix}-chromium-` });
  return await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** Saves the whole page as .data/screenshots/<name>.png. */
export async function screenshot(page: Page, name: string): Promise<void> {
  await Deno.mkdir(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: `${SCREENSHOTS}${name}.png`, fullPage: true });
}
