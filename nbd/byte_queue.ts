/**
 * Bytes received on a socket, taken off the front in exact amounts. Chunks are kept as the
 * socket delivered them; a take that fits in one chunk is a view (no copy).
 */
export class ByteQueue {
  private chunks: Uint8Array[] = [];
  /** Read position in chunks[0]. */
  private head = 0;
  private total = 0;

  get length(): number {
    return this.total;
  }

  push(chunk: Uint8Array): void {
    if (chunk.byteLength === 0) return;
    // Sockets deliver Buffers; hand out plain Uint8Array views of the same memory.
    if (chunk.constructor !== Uint8Array) {
      chunk = new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    }
    this.chunks.push(chunk);
    this.total += chunk.byteLength;
  }

  /** Removes and returns exactly n bytes; the caller checks `length` first. */
  take(n: number): Uint8Array {
    if (n > this.total) throw new RangeError(`take(${n}) with ${this.total} bytes queued`);
    if (n === 0) return new Uint8Array(0);
    const first = this.chunks[0];
    const available = first.byteLength - this.head;
    if (n <= available) {
      const out = first.subarray(this.head, this.head + n);
      this.advance(n);
      return out;
    }
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[0];
      const part = Math.min(n - filled, chunk.byteLength - this.head);
      out.set(chunk.subarray(this.head, this.head + part), filled);
      filled += part;
      this.advance(part);
    }
    return out;
  }

  /** Drops up to n bytes; returns how many were dropped. */
  skip(n: number): number {
    let dropped = 0;
    while (dropped < n && this.total > 0) {
      const part = Math.min(n - dropped, this.chunks[0].byteLength - this.head);
      this.advance(part);
      dropped += part;
    }
    return dropped;
  }

  private advance(n: number): void {
    this.head += n;
    this.total -= n;
    if (this.head === this.chunks[0].byteLength) {
      this.chunks.shift();
      this.head = 0;
    }
  }
}
