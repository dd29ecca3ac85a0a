/// <reference lib="dom" />
/**
 * The live dashboard in a real browser: playwright-core driving Debian's Chromium against
 * a 3-node cluster whose nodes serve the HTTP API with tokens. The page asks for the
 * token, shows 3 nodes, creates a volume through its dialog (found by `cairn volume list`),
 * charts live IO, and shows a node killed with kill -9 as down within the failure
 * detector's time. Screenshots of the main views go to a temp dir; CAIRN_SCREENSHOTS=1 writes
 * them to docs/screenshots/ instead (the README shows those), so a test run does not change the
 * checkout. Set CAIRN_DASHBOARD_PAINT=1 to print the first-paint figures (README, "Dashboard").
 */
import assert from "node:assert/strict";
import { chromium, type ConsoleMessage, type Page } from "playwright-core";
import { TestCluster } from "../harness/cluster.ts";
import { nodeDownAfterMs } from "../../protocol/limits.ts";
import { liveIntervalMs } from "../../http/live.ts";

const adminToken = "dashboard-admin-0123456789";
const chromiumPath = "/usr/bin/chromium";
const repoRoot = new URL("../../", import.meta.url).pathname;
const keepScreenshots = Deno.env.get("CAIRN_SCREENSHOTS") === "1";
const screenshots = keepScreenshots
  ? `${repoRoot}docs/screenshots`
  : await Deno.makeTempDir({ prefix: "cairn-screenshots-" });
/**
 * A killed node is down once the detector's silence passed (nodeDownAfterMs), then seen at
 * the hub's next read (liveIntervalMs) and drawn; plus slack for a loaded 2-core machine.
 */
const downShownWithinMs = nodeDownAfterMs + 2 * liveIntervalMs + 2000;

const hasChromium = (() => {
  try {
    return Deno.statSync(chromiumPath).isFile;
  } catch {
    return false;
  }
})();

async function cli(natsUrl: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${repoRoot}cli/main.ts`, "--nats", natsUrl, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return text;
}

/** Tabs until `selector` has focus (keyboard only); fails after `max` presses. */
async function tabTo(page: Page, selector: string, max = 30): Promise<void> {
  for (let i = 0; i < max; i++) {
    await page.keyboard.press("Tab");
    if (await page.evaluate((s) => document.activeElement?.matches(s) ?? false, selector)) return;
  }
  throw new Error(`${selector} not reached with ${max} tabs`);
}

Deno.test({
  name: "dashboard: a real browser sees the cluster live, acts through the API, sees a node die",
  ignore: !hasChromium,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const tokenDir = await Deno.makeTempDir({ prefix: "cairn-test-dashboard-" });
    await Deno.writeTextFile(`${tokenDir}/tokens`, `admin:${adminToken}\n`);
    const cluster = await TestCluster.start({
      nodes: 3,
      http: true,
      serveArgs: ["--http-tokens", `${tokenDir}/tokens`],
    });
    const browser = await chromium.launch({ executablePath: chromiumPath, args: ["--no-sandbox"] });
    const errors: string[] = [];
    const watch = (page: Page) => {
      page.on("console", (m: ConsoleMessage) => {
        // Expected: the stream's 401 before the token is given, the 409 of a name taken.
        if (m.type() === "error" && !/status of (401|409)/.test(m.text())) errors.push(m.text());
      });
      page.on("pageerror", (err) => errors.push(`page error: ${err.message}`));
    };
    try {
      await Deno.mkdir(screenshots, { recursive: true });
      const base = cluster.httpUrl(0);
      const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
      const page = await context.newPage();
      watch(page);

      await t.step("asks for the token, then shows 3 nodes by zone", async () => {
        await page.goto(base);
        const dialog = page.locator("#token-dialog");
        await dialog.waitFor({ state: "visible", timeout: 10_000 });
        await page.fill("#token-dialog input[name=token]", adminToken);
        await page.press("#token-dialog input[name=token]", "Enter");
        await page.locator(".node-card").nth(2).waitFor({ timeout: 15_000 });
        assert.equal(await page.locator(".node-card").count(), 3);
        assert.equal(await page.locator(".zone").count(), 3);
        assert.equal(await page.locator(".node-card.up").count(), 3);
        assert.match(await page.textContent("#connection-text") ?? "", /Live/);
      });

      await t.step("first paint (Paint Timing API), token kept in the tab", async () => {
        await page.reload();
        await page.locator(".node-card").nth(2).waitFor({ timeout: 15_000 });
        const paint = await page.evaluate(() => {
          const entries = Object.fromEntries(
            performance.getEntriesByType("paint").map((e) => [e.name, e.startTime]),
          );
          const nav = performance.getEntriesByType("navigation")[0] as PerformanceNavigationTiming;
          return {
            firstPaint: entries["first-paint"],
            firstContentfulPaint: entries["first-contentful-paint"],
            domContentLoaded: nav.domContentLoadedEventEnd,
            nodesShown: performance.now(),
          };
        });
        assert.ok(paint.firstContentfulPaint > 0, JSON.stringify(paint));
        if (Deno.env.get("CAIRN_DASHBOARD_PAINT")) {
          console.log(`dashboard paint (ms): ${JSON.stringify(paint)}`);
        }
      });

      await t.step("creates a volume through the UI; `cairn volume list` has it", async () => {
        await page.click("#create-button");
        await page.fill("#create-form input[name=name]", "ui-made");
        await page.fill("#create-form input[name=size]", "64");
        await page.click("#create-form button[type=submit]");
        await page.locator("#create-dialog").waitFor({ state: "hidden", timeout: 20_000 });
        await page.locator('tr[data-volume="ui-made"]').waitFor({ timeout: 10_000 });
        const listed = await cli(cluster.natsUrl, "volume", "list");
        assert.match(listed, /ui-made/, listed);
        // The same name again: the API's problem detail is shown in the dialog.
        await page.click("#create-button");
        await page.fill("#create-form input[name=name]", "ui-made");
        await page.click("#create-form button[type=submit]");
        await page.locator("#create-dialog .problem", { hasText: "already exists" }).waitFor();
        await page.keyboard.press("Escape");
        await page.locator("#create-dialog").waitFor({ state: "hidden" });
      });

      await t.step("moves the volume through its dialog: a handoff in the feed", async () => {
        const row = page.locator('tr[data-volume="ui-made"]');
        const ownerBefore = (await row.locator('td[data-label="Owner"]').textContent())!
          .split(" ")[0];
        await row.locator("button", { hasText: "Move" }).click();
        const to = await page.locator("#move-form select").inputValue();
        assert.notEqual(to, ownerBefore);
        await page.click("#move-form button[type=submit]");
        await page.locator("#move-dialog").waitFor({ state: "hidden", timeout: 20_000 });
        await row.locator('td[data-label="Owner"]', { hasText: to }).waitFor({ timeout: 10_000 });
        await page.locator(".event", { hasText: `handed off from ${ownerBefore} to ${to}` })
          .waitFor({ timeout: 10_000 });
      });

      await t.step("verify from the volume row: its progress and end in the feed", async () => {
        const row = page.locator('tr[data-volume="ui-made"]');
        await row.locator("button", { hasText: "Verify" }).click();
        await page.locator("li.operation.succeeded", { hasText: "every replica agrees" }).waitFor({
          timeout: 30_000,
        });
        await page.locator(".event", { hasText: "volume.verify of ui-made started" }).waitFor();
        await page.locator(".event", { hasText: "volume.verify of ui-made: every replica agrees" })
          .waitFor();
      });

      await t.step("drains a node through its card, then undrains it", async () => {
        // The owner of ui-made: the drain must move it off.
        const row = page.locator('tr[data-volume="ui-made"]');
        const owner = (await row.locator('td[data-label="Owner"]').textContent())!.split(" ")[0];
        const card = page.locator(`li.node-card[data-node="${owner}"]`);
        await card.locator("button", { hasText: "Drain" }).click();
        await page.locator("#confirm-dialog").waitFor({ state: "visible" });
        await page.click("#confirm-ok");
        await page.locator("#confirm-dialog").waitFor({ state: "hidden", timeout: 30_000 });
        await card.locator("button", { hasText: "Undrain" }).waitFor({ timeout: 10_000 });
        await card.getByText("Drained").waitFor({ timeout: 10_000 });
        const nodes = await cli(cluster.natsUrl, "node", "list");
        assert.match(nodes, new RegExp(`${owner} +\\S+ +draining`), nodes);
        await row.locator('td[data-label="Owner"]', { hasNotText: owner }).waitFor({
          timeout: 10_000,
        });
        await card.locator("button", { hasText: "Undrain" }).click();
        await card.locator("button", { hasText: /^Drain$/ }).waitFor({ timeout: 10_000 });
        assert.match(await cli(cluster.natsUrl, "node", "list"), new RegExp(`${owner} +\\S+ +up`));
      });

      await t.step(
        "keyboard: Tab reaches Create volume, Enter opens it, Escape closes",
        async () => {
          await page.locator("body").focus();
          await page.evaluate(() => (document.activeElement as HTMLElement | null)?.blur());
          await tabTo(page, "#create-button");
          await page.keyboard.press("Enter");
          await page.locator("#create-dialog").waitFor({ state: "visible" });
          await page.keyboard.press("Escape");
          await page.locator("#create-dialog").waitFor({ state: "hidden" });
        },
      );

      await t.step("live IO: charts and the volume row show a writer's IOPS", async () => {
        const client = await cluster.client();
        // A second volume of 16 segments, for a segment grid worth looking at.
        await client.createVolume({
          name: "db",
          sizeBytes: 64 * 1024 * 1024,
          segmentBytes: 4 * 1024 * 1024,
        });
        const writers = ["ui-made", "db"].map(async (name, i) => {
          const volume = await client.openVolume(name);
          const block = new Uint8Array((i + 1) * 16 * 1024).fill(7);
          const until = performance.now() + 5000;
          let offset = 0;
          while (performance.now() < until) {
            await volume.write(offset, block);
            offset = (offset + block.length) % (32 * 1024 * 1024);
          }
          await volume.close();
        });
        await Promise.all(writers);
        const iops = await page.locator('tr[data-volume="ui-made"] td[data-label="IOPS"]')
          .textContent();
        assert.ok(Number((iops ?? "0").replace(/,/g, "")) > 0, `IOPS shown: ${iops}`);
        await page.evaluate(() => (document.activeElement as HTMLElement | null)?.blur());
        await page.screenshot({ path: `${screenshots}/dashboard-1280.png`, fullPage: true });
      });

      await t.step("phone width: cards stack, no sideways scroll", async () => {
        const phone = await browser.newContext({
          viewport: { width: 390, height: 844 },
          deviceScaleFactor: 1,
        });
        const small = await phone.newPage();
        watch(small);
        await small.addInitScript(
          (token) => sessionStorage.setItem("cairn.token", token),
          adminToken,
        );
        await small.goto(base);
        await small.locator(".node-card").nth(2).waitFor({ timeout: 15_000 });
        const overflow = await small.evaluate(() =>
          document.documentElement.scrollWidth - document.documentElement.clientWidth
        );
        assert.ok(overflow <= 0, `page scrolls sideways by ${overflow}px at 390 px`);
        await small.screenshot({ path: `${screenshots}/dashboard-390.png`, fullPage: true });
        await phone.close();
      });

      await t.step("kill -9 of a node: shown down within the detector's time", async () => {
        const startedMs = performance.now();
        await cluster.killNode(2);
        await page.locator('.node-card.down[data-node="n3"]').waitFor({
          timeout: downShownWithinMs,
        });
        const shownMs = performance.now() - startedMs;
        await page.locator(".event.critical", { hasText: "node n3 is down" }).waitFor();
        console.log(`n3 shown down ${Math.round(shownMs)} ms after kill -9`);
        assert.ok(shownMs <= downShownWithinMs);
        await page.locator('tr[data-volume="ui-made"] .badge', { hasText: /Degraded|Owner down/ })
          .waitFor({ timeout: 10_000 });
        await page.evaluate(() => (document.activeElement as HTMLElement | null)?.blur());
        await page.screenshot({ path: `${screenshots}/dashboard-node-down.png` });
      });

      assert.deepEqual(errors, [], "no console errors");
      await context.close();
    } catch (err) {
      console.error(cluster.logs());
      throw err;
    } finally {
      await browser.close();
      await cluster.stop();
      await Deno.remove(tokenDir, { recursive: true });
      if (!keepScreenshots) await Deno.remove(screenshots, { recursive: true });
    }
  },
});
