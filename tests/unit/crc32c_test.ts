import { mulberry32 as seeded } from "../harness/random.ts";
import assert from "node:assert/strict";
import { crc32cNative, crc32cSoftware } from "../../protocol/crc32c.ts";

/** Bit-at-a-time reference, to check the sliced tables against. */
function crc32cBitwise(data: Uint8Array, seed = 0): number {
  let crc = ~seed >>> 0;
  for (const byte of data) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return ~crc >>> 0;
}

function randomBytes(random: () => number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = Math.floor(random() * 256);
  return out;
}

/** Both implementations, where this machine has the native one. */
const implementations: [string, (data: Uint8Array, seed?: number) => number][] = [
  ["software", crc32cSoftware],
];
if (crc32cNative) implementations.push(["isa-l", crc32cNative]);

Deno.test("crc32c: ISA-L is used where libisal2 is installed", () => {
  const installed = ["/usr/lib/x86_64-linux-gnu/libisal.so.2", "/usr/lib/libisal.so.2"]
    .some((path) => {
      try {
        return Deno.statSync(path).isFile;
      } catch {
        return false;
      }
    });
  const forcedSoftware = Deno.env.get("CAIRN_CRC32C") === "software";
  assert.equal(crc32cNative !== null, installed && !forcedSoftware);
});

for (const [name, crc32c] of implementations) {
  Deno.test(`crc32c (${name}): known vectors (RFC 3720 and the check value)`, () => {
    const ascii = (s: string) => new TextEncoder().encode(s);
    assert.equal(crc32c(ascii("123456789")), 0xe3069283);
    assert.equal(crc32c(new Uint8Array(0)), 0);
    assert.equal(crc32c(ascii("a")), 0xc1d04330);
    assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);
    assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
    assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e);
    assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i)), 0x113fdb5c);
  });

  Deno.test(`crc32c (${name}): matches the bitwise reference at every length and alignment`, () => {
    const random = seeded(1);
    const buf = randomBytes(random, 300);
    for (let start = 0; start < 9; start++) {
      for (let end = start; end <= buf.length; end += 1 + (end % 7)) {
        const slice = buf.subarray(start, end);
        assert.equal(crc32c(slice), crc32cBitwise(slice), `bytes ${start}..${end}`);
      }
    }
    const block = randomBytes(random, 4096);
    assert.equal(crc32c(block), crc32cBitwise(block));
  });

  Deno.test(`crc32c (${name}): chaining with seed equals one pass`, () => {
    const random = seeded(2);
    for (let trial = 0; trial < 200; trial++) {
      const data = randomBytes(random, Math.floor(random() * 600));
      const cut = Math.floor(random() * (data.length + 1));
      const whole = crc32c(data);
      assert.equal(crc32c(data.subarray(cut), crc32c(data.subarray(0, cut))), whole);
      assert.equal(crc32cBitwise(data.subarray(cut), crc32c(data.subarray(0, cut))), whole);
    }
    // Byte by byte, too.
    const data = randomBytes(random, 100);
    let crc = 0;
    for (let i = 0; i < data.length; i++) crc = crc32c(data.subarray(i, i + 1), crc);
    assert.equal(crc, crc32c(data));
  });

  Deno.test(`crc32c (${name}): results are unsigned 32-bit and detect a single flipped bit`, () => {
    const random = seeded(3);
    const block = randomBytes(random, 4096);
    const good = crc32c(block);
    assert.ok(Number.isInteger(good) && good >= 0 && good <= 0xffffffff);
    for (let trial = 0; trial < 100; trial++) {
      const bit = Math.floor(random() * block.length * 8);
      block[bit >> 3] ^= 1 << (bit & 7);
      assert.notEqual(crc32c(block), good);
      block[bit >> 3] ^= 1 << (bit & 7);
    }
    assert.equal(crc32c(block), good);
  });
}
