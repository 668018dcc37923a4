/**
 * The console in a real browser: Debian's chromium driven by playwright-core,
 * against `main.ts all` on free ports (embedded engines, identity as issuer).
 * Screenshots of each page go to .data/screenshots/.
 */
import assert from "node:assert/strict";
import type { BrowserContext, Page } from "playwright-core";
import { headlessChromium, screenshot } from "../../shared/testing/browser.ts";
import { type MainProcess, startMain } from "../_testing.ts";

const PASSWORDS: Record<string, string> = {
  app_user: "dev-only-app-user-password",
  app_admin: "dev-only-app-admin-password",
  app_super_user: "dev-only-app-super-user-password",
};

async function signIn(page: Page, console: string, username: string): Promise<void> {
  await page.goto(`${console}/`);
  await page.getByRole("link", { name: "Sign in" }).first().click();
  await page.getByLabel("Username or e-mail").fill(username);
  await page.getByLabel("Password").fill(PASSWORDS[username]!);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(`${console}/search`);
  assert.equal(await page.locator("form.signout span").textContent(), username);
}

async function signOut(page: Page, console: string, issuer: string): Promise<void> {
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.waitForURL(`${console}/`);
  await page.getByRole("link", { name: "Sign in" }).first().waitFor();
  // Signed out at the issuer too: signing in again asks for the password.
  await page.getByRole("link", { name: "Sign in" }).first().click();
  await page.waitForURL((url) => url.href.startsWith(issuer));
  await page.getByLabel("Password").waitFor();
}

async function search(page: Page, console: string, text: string, version = "v2") {
  await page.goto(`${console}/search`);
  await page.getByLabel("Text").fill(text);
  await page.getByLabel(version).check();
  await page.getByRole("button", { name: "Search" }).click();
  await page.waitForURL(/\/search\?/);
}

Deno.test({
  name:
    "console in a browser: sign-in per user, search and paging, word counts, traces, live, system, permissions, CSRF, sign-out",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    let main: MainProcess | undefined;
    let context: BrowserContext | undefined;
    try {
      main = await startMain(["all"], { STREAM_RATE_PER_SECOND: "20" });
      const console = main.urls.console!;
      const issuer = `${main.urls.identity}/realms/twitterapi`;
      context = await headlessChromium("console");
      const page = context.pages()[0] ?? await context.newPage();

      // Anonymous: a landing page; a page by URL sends to the issuer.
      await page.goto(`${console}/`);
      assert.equal(await page.getByRole("heading", { level: 1 }).textContent(), "Welcome");
      await screenshot(page, "landing");

      // app_super_user sees every tweet: search, page, word counts, trace.
      await signIn(page, console, "app_super_user");
      let rows = 0;
      for (let attempt = 0; attempt < 60 && rows < 21; attempt++) {
        await search(page, console, "kafka");
        rows = await page.locator("table tbody tr").count();
        if (rows < 20) await page.waitForTimeout(500);
        else {
          rows += await page.getByRole("link", { name: "Next page" }).count();
        }
      }
      assert.equal(await page.locator("table tbody tr").count(), 20);
      await page.locator("#word-counts", { hasText: "kafka" }).waitFor();
      assert.doesNotMatch(await page.locator("#word-counts").textContent() ?? "", /unavailable/);
      await screenshot(page, "search");
      const firstPage = await page.locator("table tbody tr td:last-child").allTextContents();
      await page.getByRole("link", { name: "Next page" }).click();
      const secondPage = await page.locator("table tbody tr td:last-child").allTextContents();
      assert.ok(secondPage.length > 0);
      assert.equal(secondPage.filter((id) => firstPage.includes(id)).length, 0);
      // v1 too.
      await search(page, console, "kafka", "v1");
      assert.equal(await page.locator("table tbody tr").count(), 20);

      // The search's trace: spans of at least three services, and their log lines.
      const traceHref = await page.locator("a.trace").first().getAttribute("href");
      assert.ok(traceHref);
      let services = 0;
      for (let attempt = 0; attempt < 30 && services < 3; attempt++) {
        await page.goto(`${console}${traceHref}`);
        services = new Set(
          await Promise.all(
            (await page.locator(".waterfall .span").all()).map((item) =>
              item.getAttribute("data-service")
            ),
          ),
        ).size;
        if (services < 3) await page.waitForTimeout(500);
      }
      assert.ok(services >= 3, `spans of ${services} services`);
      await page.locator("#trace-logs tbody tr").first().waitFor();
      await screenshot(page, "trace");

      // A bad parameter is a readable problem with its trace id, not a 200 page.
      const bad = await page.goto(`${console}/search?text=kafka&userId=abc`);
      assert.equal(bad?.status(), 400);
      await page.locator(".problem a.trace").waitFor();

      // Live: new tweets arrive.
      await page.goto(`${console}/live`);
      const liveCount = async () => Number(await page.locator("#live-count").textContent());
      const waitForMore = async (than: number) => {
        for (let attempt = 0; attempt < 40 && await liveCount() <= than; attempt++) {
          await page.waitForTimeout(250);
        }
        assert.ok(await liveCount() > than, `the live list passes ${than}`);
      };
      await waitForMore(0);
      const before = await liveCount();
      await waitForMore(before);
      await screenshot(page, "live");

      // System: every service, updating.
      await page.goto(`${console}/system`);
      for (const service of ["gateway", "query", "analytics", "console", "identity"]) {
        await page.locator(`#system-table tr[data-service="${service}"].state-up`).first()
          .waitFor();
      }
      const updated = page.locator("[data-live='/system/table'][data-updated]");
      await updated.waitFor({ timeout: 10_000 });
      await screenshot(page, "system");

      // Words: trending and a word's history chart.
      await page.goto(`${console}/words`);
      await page.locator("section ol li").first().waitFor();
      await screenshot(page, "words");
      await page.goto(`${console}/words/kafka`);
      await page.locator("svg.chart polyline").waitFor();

      await page.goto(`${console}/permissions`);
      assert.equal(await page.getByRole("heading", { level: 1 }).textContent(), "Permissions");
      await signOut(page, console, issuer);

      // app_admin: the stream's controls, and grants.
      await signIn(page, console, "app_admin");
      await page.goto(`${console}/live`);
      await page.getByRole("button", { name: "Pause" }).click();
      await page.locator("#stream-state", { hasText: "paused" }).waitFor();
      await page.getByRole("button", { name: "Resume" }).click();
      await page.locator("#stream-state", { hasText: "running" }).waitFor();
      await page.goto(`${console}/permissions`);
      await page.locator("#grant-form").getByLabel("User id (subject)").fill("someone-else");
      await page.getByLabel("Scope").selectOption("author");
      await page.getByLabel("Target (tweet id or author id; empty for all)").fill("42");
      await page.getByLabel("Level").selectOption("WRITE");
      await page.getByRole("button", { name: "Grant", exact: true }).click();
      await page.locator(".done", { hasText: "Granted WRITE on author 42" }).waitFor();
      assert.equal(await page.locator("#grants tbody tr").count(), 1);
      await screenshot(page, "permissions");
      await page.getByLabel("Scope").selectOption("author");
      await page.getByLabel("Target (tweet id or author id; empty for all)").fill("42");
      await page.getByRole("button", { name: "Revoke", exact: true }).click();
      await page.locator(".done", { hasText: "Revoked author 42" }).waitFor();
      // CSRF: the same form without its token is refused.
      const forged = await page.evaluate(async (url) => {
        const response = await fetch(url, {
          method: "POST",
          body: new URLSearchParams({ userId: "x", scope: "all", level: "READ", action: "grant" }),
        });
        return response.status;
      }, `${console}/permissions`);
      assert.equal(forged, 403);
      await signOut(page, console, issuer);

      // app_user: no permission page by link, by URL or by posting the form.
      await signIn(page, console, "app_user");
      assert.equal(await page.getByRole("link", { name: "Permissions" }).count(), 0);
      const refused = await page.goto(`${console}/permissions`);
      assert.equal(refused?.status(), 403);
      await page.getByRole("heading", { level: 1, name: "Admins only" }).waitFor();
      const csrf = await page.locator("input[name=csrf]").first().inputValue();
      const posted = await page.evaluate(async ([url, token]) => {
        const response = await fetch(url!, {
          method: "POST",
          body: new URLSearchParams({
            csrf: token!,
            userId: "x",
            scope: "all",
            level: "ADMIN",
            action: "grant",
          }),
        });
        return response.status;
      }, [`${console}/permissions`, csrf]);
      assert.equal(posted, 403);
      // No stream controls for app_user on the live page.
      await page.goto(`${console}/live`);
      assert.equal(await page.getByRole("button", { name: "Pause" }).count(), 0);
      // A narrow screen still shows the search.
      await page.setViewportSize({ width: 390, height: 844 });
      await search(page, console, "kafka");
      await screenshot(page, "search-390");
      await signOut(page, console, issuer);
    } finally {
      await context?.close();
      await main?.stop();
    }
  },
});

Deno.test({
  name: "console in a browser: word counts are shown unavailable while analytics is down",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    let main: MainProcess | undefined;
    let context: BrowserContext | undefined;
    try {
      // Every service but analytics: query finds no analytics instance to ask.
      main = await startMain(
        ["registry", "identity", "gateway", "stream", "indexer", "query", "console"],
        { STREAM_RATE_PER_SECOND: "20" },
      );
      const console = main.urls.console!;
      context = await headlessChromium("console");
      const page = context.pages()[0] ?? await context.newPage();
      await signIn(page, console, "app_super_user");
      let rows = 0;
      for (let attempt = 0; attempt < 40 && rows === 0; attempt++) {
        await search(page, console, "kafka");
        rows = await page.locator("table tbody tr").count();
        if (rows === 0) await page.waitForTimeout(500);
      }
      assert.ok(rows > 0);
      await page.locator(".unavailable", { hasText: "Word counts unavailable" }).waitFor();
      await screenshot(page, "search-unavailable");
    } finally {
      await context?.close();
      await main?.stop();
    }
  },
});
