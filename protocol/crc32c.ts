/**
 * CRC-32C (Castagnoli): reflected polynomial 0x82F63B78, init and xorout 0xFFFFFFFF.
 * crc32c("123456789") = 0xE3069283. Every 4 KiB block is checksummed on each
 * write and each read, so this is a hot path. Where Intel's ISA-L is installed
 * (Debian package libisal2; scripts/install adds it) it is called through FFI:
 * about 30 GB/s with the CPU's CRC instructions against 1.4 GB/s for the
 * software version below, which is the fallback (no library, or no FFI
 * permission). CAIRN_CRC32C=software forces the fallback.
 */

import { openNativeLibrary } from "./native.ts";

const poly = 0x82f63b78;

// Sixteen 256-entry tables in one flat array: entry k*256 + b is the CRC of
// byte b followed by k zero bytes.
const table = new Int32Array(16 * 256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ poly : c >>> 1;
  table[n] = c;
}
for (let i = 256; i < table.length; i++) {
  const prev = table[i - 256];
  table[i] = (prev >>> 8) ^ table[prev & 0xff];
}

/** Words are read as little-endian: true on every host Deno runs on, checked once. */
const littleEndian = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** CRC-32C of data, computed in TypeScript: slicing-by-16 over aligned 32-bit words. */
export function crc32cSoftware(data: Uint8Array, seed = 0): number {
  const t = table;
  let crc = ~seed | 0;
  let i = 0;
  const n = data.length;
  // Bytes up to a 4-byte aligned address, then 16 bytes (four words) a step.
  const misaligned = (4 - (data.byteOffset & 3)) & 3;
  while (i < misaligned && i < n) crc = t[(crc ^ data[i++]) & 0xff] ^ (crc >>> 8);
  if (littleEndian && n - i >= 16) {
    const words = new Int32Array(data.buffer, data.byteOffset + i, (n - i) >>> 2);
    const steps = words.length >>> 2;
    let w = 0;
    for (let s = 0; s < steps; s++, w += 4) {
      const a = words[w] ^ crc;
      const b = words[w + 1];
      const c = words[w + 2];
      const d = words[w + 3];
      crc = t[3840 + (a & 0xff)] ^ t[3584 + ((a >>> 8) & 0xff)] ^
        t[3328 + ((a >>> 16) & 0xff)] ^ t[3072 + (a >>> 24)] ^
        t[2816 + (b & 0xff)] ^ t[2560 + ((b >>> 8) & 0xff)] ^
        t[2304 + ((b >>> 16) & 0xff)] ^ t[2048 + (b >>> 24)] ^
        t[1792 + (c & 0xff)] ^ t[1536 + ((c >>> 8) & 0xff)] ^
        t[1280 + ((c >>> 16) & 0xff)] ^ t[1024 + (c >>> 24)] ^
        t[768 + (d & 0xff)] ^ t[512 + ((d >>> 8) & 0xff)] ^
        t[256 + ((d >>> 16) & 0xff)] ^ t[d >>> 24];
    }
    i += w * 4;
  }
  while (i < n) crc = t[(crc ^ data[i++]) & 0xff] ^ (crc >>> 8);
  return ~crc >>> 0;
}

/** The ISA-L library name (Debian package libisal2). */
const isalLibrary = "libisal.so.2";

/**
 * ISA-L's crc32_iscsi, or null when it cannot be loaded. Its register is not
 * inverted on the way in or out, so crc32c(data, seed) = ~crc32_iscsi(data, ~seed).
 */
function loadIsal(): ((data: Uint8Array, seed?: number) => number) | null {
  // Asking first: reading the variable without the permission would prompt on a terminal.
  const env = Deno.permissions.querySync({ name: "env", variable: "CAIRN_CRC32C" });
  if (env.state === "granted" && Deno.env.get("CAIRN_CRC32C") === "software") return null;
  const lib = openNativeLibrary(isalLibrary, {
    crc32_iscsi: { parameters: ["buffer", "i32", "u32"], result: "u32" },
  });
  if (!lib) return null;
  const iscsi = lib.symbols.crc32_iscsi;
  return (data, seed = 0) => ~iscsi(data, data.length, ~seed >>> 0) >>> 0;
}

/** The hardware-backed CRC-32C, or null when ISA-L is not available here. */
export const crc32cNative = loadIsal();

/** Which implementation crc32c uses in this process. */
export const crc32cImplementation: "isa-l" | "software" = crc32cNative ? "isa-l" : "software";

/**
 * CRC-32C of data. seed is a previous result, so crc32c(b, crc32c(a)) equals
 * crc32c(a followed by b).
 */
export const crc32c: (data: Uint8Array, seed?: number) => number = crc32cNative ??
  crc32cSoftware;
