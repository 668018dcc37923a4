/**
 * The API reference in a real browser: Debian's chromium driven by
 * playwright-core, against `main.ts all` on free ports (embedded engines,
 * identity as issuer). A developer signs in on /docs through Authorize (the
 * authorization code flow with PKCE, in Swagger UI's popup) and tries one
 * search, which answers 200 with tweets. Screenshots go to .data/screenshots/.
 */
import assert from "node:assert/strict";
import type { BrowserContext, Page } from "playwright-core";
import { headlessChromium, screenshot } from "../../shared/testing/browser.ts";
import { type MainProcess, startMain } from "../_testing.ts";

const SEARCH_PATH = "/api/v2/tweets";

/** Signs in through Swagger UI's Authorize: the issuer's login page opens in a popup. */
async function authorize(page: Page, username: string, password: string): Promise<void> {
  await page.getByRole("button", { name: "Authorize" }).first().click();
  const dialog = page.locator(".modal-ux");
  const flow = dialog.locator(".auth-container", { hasText: "authorizationCode" });
  assert.equal(await flow.locator("input#client_id_authorizationCode").inputValue(), "api-docs");
  const [popup] = await Promise.all([
    page.waitForEvent("popup"),
    // Its accessible name is "Apply given OAuth2 credentials".
    flow.locator("button.authorize").click(),
  ]);
  await popup.getByLabel("Username or e-mail").fill(username);
  await popup.getByLabel("Password").fill(password);
  // The redirect page hands the code to the opener and closes at once; the page redeems it.
  const closed = popup.waitForEvent("close");
  await popup.getByRole("button", { name: "Sign in" }).click();
  await closed;
  await flow.locator("button", { hasText: "Logout" }).waitFor();
  await dialog.locator("button.btn-done").first().click();
}

Deno.test({
  name: "/docs in a browser: a developer signs in with PKCE and tries a search that finds tweets",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    let main: MainProcess | undefined;
    let context: BrowserContext | undefined;
    try {
      main = await startMain(["all"], { STREAM_RATE_PER_SECOND: "20" });
      const gateway = main.urls.gateway!;
      context = await headlessChromium("docs");
      const page = context.pages()[0] ?? await context.newPage();
      await page.goto(`${gateway}/docs`);
      await authorize(page, "app_super_user", "dev-only-app-super-user-password");
      const operation = page.locator(
        `.opblock-get:has(.opblock-summary-path[data-path="${SEARCH_PATH}"])`,
      );
      await operation.waitFor();
      await screenshot(page, "docs");

      await operation.locator(".opblock-summary").click();
      await operation.getByRole("button", { name: "Try it out" }).click();
      await operation.locator('tr[data-param-name="text"] input').fill("kafka");
      // The stream may not have produced a kafka tweet yet: execute until one is found.
      let tweets = 0;
      let sent = "";
      for (let attempt = 0; attempt < 60 && tweets === 0; attempt++) {
        const [response] = await Promise.all([
          page.waitForResponse((answer) => new URL(answer.url()).pathname === SEARCH_PATH),
          operation.getByRole("button", { name: "Execute" }).click(),
        ]);
        sent = response.url();
        assert.equal(response.status(), 200, await response.text());
        assert.match(response.request().headers().authorization ?? "", /^Bearer \S+$/);
        const { data } = await response.json();
        assert.ok(Array.isArray(data));
        tweets = data.length;
        if (tweets === 0) await page.waitForTimeout(500);
      }
      // The page sends what the developer typed and every parameter's example besides.
      assert.ok(tweets > 0, `the search found no tweets: ${sent}`);
      await operation.locator(".live-responses-table .response-col_status", { hasText: "200" })
        .first().waitFor();
      await screenshot(page, "docs-search");
    } finally {
      await context?.close();
      await main?.stop();
    }
  },
});
