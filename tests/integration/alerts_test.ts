/**
 * The alerting rules in docs/alerts.yml: valid for Prometheus (`promtool check rules`), and
 * each fires on the series it is meant for (`promtool test rules alerts_test.yml`).
 */
import assert from "node:assert/strict";
import { runCapture } from "../../server/process.ts";

const repoRoot = new URL("../../", import.meta.url).pathname;

Deno.test("alerts: promtool check rules passes on docs/alerts.yml", async () => {
  const { code, stdout, stderr } = await runCapture("promtool", [
    "check",
    "rules",
    `${repoRoot}docs/alerts.yml`,
  ]);
  assert.equal(code, 0, stdout + stderr);
  assert.match(stdout, /SUCCESS: \d+ rules found/);
});

Deno.test("alerts: promtool test rules (node down, degraded, rebuild stalled, disk full)", async () => {
  const { code, stdout, stderr } = await runCapture("promtool", [
    "test",
    "rules",
    `${repoRoot}tests/integration/alerts_test.yml`,
  ]);
  assert.equal(code, 0, stdout + stderr);
});
