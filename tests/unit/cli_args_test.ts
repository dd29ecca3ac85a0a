import assert from "node:assert/strict";
import { formatBytes, parseArgs, parseSize, UsageError } from "../../cli/args.ts";
import { defaultSegmentBytesFor, maxSegmentsPerVolume } from "../../protocol/limits.ts";

Deno.test("parseSize: suffixes, plain bytes, and clear errors", () => {
  assert.equal(parseSize("4096"), 4096);
  assert.equal(parseSize("64MiB"), 64 * 1024 ** 2);
  assert.equal(parseSize("8mib"), 8 * 1024 ** 2);
  assert.equal(parseSize("1.5GiB"), 1.5 * 1024 ** 3);
  assert.equal(parseSize("16TiB"), 16 * 1024 ** 4);
  assert.equal(parseSize("4 KiB"), 4096);
  for (const bad of ["", "abc", "12XB", "-5", "1.3B", "1e3"]) {
    assert.throws(() => parseSize(bad), UsageError, bad);
  }
});

Deno.test("parseArgs: flags with values, = form, booleans, positionals", () => {
  const args = parseArgs(["volume", "create", "v1", "--size", "1GiB", "--json", "--replicas=2"], [
    "json",
  ]);
  assert.deepEqual(args.positional, ["volume", "create", "v1"]);
  assert.equal(args.flags.get("size"), "1GiB");
  assert.equal(args.flags.get("json"), true);
  assert.equal(args.flags.get("replicas"), "2");
  assert.throws(() => parseArgs(["--size"]), UsageError);
});

Deno.test("formatBytes and default segment sizes", () => {
  assert.equal(formatBytes(64 * 1024 ** 2), "64 MiB");
  assert.equal(formatBytes(1536), "1.5 KiB");
  assert.equal(defaultSegmentBytesFor(1024 ** 3), 64 * 1024 ** 2);
  const huge = 64 * 1024 ** 4;
  assert.ok(Math.ceil(huge / defaultSegmentBytesFor(huge)) <= maxSegmentsPerVolume);
});
