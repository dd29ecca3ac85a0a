/**
 * CRC-32C (Castagnoli): reflected polynomial 0x82F63B78, init and xorout 0xFFFFFFFF.
 * crc32c("123456789") = 0xE3069283. Slicing-by-8, because every 4 KiB block is
 * checksummed on each write and each read (about 1.3 GB/s here).
 */

const poly = 0x82f63b78;

// Eight 256-entry tables in one array (one flat array measured ~10% faster than
// eight): entry k*256 + b is the CRC of byte b followed by k zero bytes.
const table = new Int32Array(8 * 256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ poly : c >>> 1;
  table[n] = c;
}
for (let i = 256; i < table.length; i++) {
  const prev = table[i - 256];
  table[i] = (prev >>> 8) ^ table[prev & 0xff];
}

/**
 * CRC-32C of data. seed is a previous result, so crc32c(b, crc32c(a)) equals
 * crc32c(a followed by b).
 */
export function crc32c(data: Uint8Array, seed = 0): number {
  const t = table;
  let crc = ~seed | 0;
  let i = 0;
  const n = data.length;
  const end8 = n - (n & 7);
  while (i < end8) {
    const lo = crc ^ (data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24));
    const hi = data[i + 4] | (data[i + 5] << 8) | (data[i + 6] << 16) | (data[i + 7] << 24);
    crc = t[1792 + (lo & 0xff)] ^ t[1536 + ((lo >>> 8) & 0xff)] ^
      t[1280 + ((lo >>> 16) & 0xff)] ^ t[1024 + (lo >>> 24)] ^
      t[768 + (hi & 0xff)] ^ t[512 + ((hi >>> 8) & 0xff)] ^
      t[256 + ((hi >>> 16) & 0xff)] ^ t[hi >>> 24];
    i += 8;
  }
  while (i < n) crc = t[(crc ^ data[i++]) & 0xff] ^ (crc >>> 8);
  return ~crc >>> 0;
}
