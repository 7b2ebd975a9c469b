import { closeSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import {
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_VERSION,
  GgmlType,
  GgufType,
  Q8_0_BLOCK,
  Q8_0_BLOCK_BYTES,
  tensorByteSize,
  toHalf,
  type GgufScalar,
  type GgufScalarType,
  type GgufValue,
} from "./format.js";

/**
 * A tensor to write. `shape` is in ggml order (ne0 first: the length of one contiguous row).
 * `fillRow` is called once per row, in order, with a zeroed buffer of `shape[0]` values to fill.
 */
export interface TensorSpec {
  name: string;
  shape: number[];
  type: GgmlType;
  fillRow: (row: number, out: Float32Array) => void;
}

/** Grows a byte buffer for the header, metadata and tensor descriptors. */
class ByteSink {
  private buf = Buffer.alloc(1 << 16);
  length = 0;

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const next = Buffer.alloc(Math.max(this.buf.length * 2, this.length + n));
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }
  u8(v: number): void {
    this.reserve(1);
    this.buf.writeUInt8(v, this.length);
    this.length += 1;
  }
  i8(v: number): void {
    this.reserve(1);
    this.buf.writeInt8(v, this.length);
    this.length += 1;
  }
  u16(v: number): void {
    this.reserve(2);
    this.buf.writeUInt16LE(v, this.length);
    this.length += 2;
  }
  i16(v: number): void {
    this.reserve(2);
    this.buf.writeInt16LE(v, this.length);
    this.length += 2;
  }
  u32(v: number): void {
    this.reserve(4);
    this.buf.writeUInt32LE(v, this.length);
    this.length += 4;
  }
  i32(v: number): void {
    this.reserve(4);
    this.buf.writeInt32LE(v, this.length);
    this.length += 4;
  }
  f32(v: number): void {
    this.reserve(4);
    this.buf.writeFloatLE(v, this.length);
    this.length += 4;
  }
  f64(v: number): void {
    this.reserve(8);
    this.buf.writeDoubleLE(v, this.length);
    this.length += 8;
  }
  u64(v: number | bigint): void {
    this.reserve(8);
    this.buf.writeBigUInt64LE(BigInt(v), this.length);
    this.length += 8;
  }
  i64(v: number | bigint): void {
    this.reserve(8);
    this.buf.writeBigInt64LE(BigInt(v), this.length);
    this.length += 8;
  }
  str(s: string): void {
    const bytes = Buffer.from(s, "utf8");
    this.u64(bytes.length);
    this.reserve(bytes.length);
    bytes.copy(this.buf, this.length);
    this.length += bytes.length;
  }
  pad(alignment: number): void {
    const n = (alignment - (this.length % alignment)) % alignment;
    this.reserve(n);
    this.buf.fill(0, this.length, this.length + n);
    this.length += n;
  }
  bytes(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

function writeScalar(sink: ByteSink, type: GgufScalarType, value: GgufScalar): void {
  switch (type) {
    case GgufType.UINT8:
      return sink.u8(Number(value));
    case GgufType.INT8:
      return sink.i8(Number(value));
    case GgufType.UINT16:
      return sink.u16(Number(value));
    case GgufType.INT16:
      return sink.i16(Number(value));
    case GgufType.UINT32:
      return sink.u32(Number(value));
    case GgufType.INT32:
      return sink.i32(Number(value));
    case GgufType.FLOAT32:
      return sink.f32(Number(value));
    case GgufType.BOOL:
      return sink.u8(value ? 1 : 0);
    case GgufType.STRING:
      return sink.str(String(value));
    case GgufType.UINT64:
      return sink.u64(typeof value === "bigint" ? value : BigInt(Number(value)));
    case GgufType.INT64:
      return sink.i64(typeof value === "bigint" ? value : BigInt(Number(value)));
    case GgufType.FLOAT64:
      return sink.f64(Number(value));
  }
}

/** Encodes one row of floats into `dest` in the tensor's element type. */
function encodeRow(type: GgmlType, row: Float32Array, dest: Buffer, at: number): void {
  switch (type) {
    case GgmlType.F32: {
      let off = at;
      for (const x of row) {
        dest.writeFloatLE(x, off);
        off += 4;
      }
      return;
    }
    case GgmlType.F16: {
      let off = at;
      for (const x of row) {
        dest.writeUInt16LE(toHalf(x), off);
        off += 2;
      }
      return;
    }
    case GgmlType.Q8_0:
      // Same rounding as ggml's quantize_row_q8_0_ref: d = amax / 127, q = round(x / d). Indexed, not sliced:
      // a view per block of 32 would be millions of allocations for the bench model. The `!`s: the row's length
      // is a multiple of Q8_0_BLOCK (tensorByteSize refused the tensor otherwise), so base + i < row.length.
      for (let b = 0; b < row.length / Q8_0_BLOCK; b++) {
        const base = b * Q8_0_BLOCK;
        let amax = 0;
        for (let i = 0; i < Q8_0_BLOCK; i++) amax = Math.max(amax, Math.abs(row[base + i]!));
        const d = amax / 127;
        const inv = d ? 1 / d : 0;
        const off = at + b * Q8_0_BLOCK_BYTES;
        dest.writeUInt16LE(toHalf(d), off);
        for (let i = 0; i < Q8_0_BLOCK; i++) dest.writeInt8(Math.round(row[base + i]! * inv), off + 2 + i);
      }
      return;
  }
}

/**
 * Writes a GGUF v3 file: metadata first, then each tensor's data row by row, so a model of any size is
 * written with one tensor's worth of memory. The file appears under its final name only when complete.
 */
export function writeGguf(path: string, metadata: Map<string, GgufValue>, tensors: TensorSpec[]): { bytes: number } {
  const alignment = GGUF_DEFAULT_ALIGNMENT;
  const head = new ByteSink();
  head.u32(GGUF_MAGIC);
  head.u32(GGUF_VERSION);
  head.u64(tensors.length);
  head.u64(metadata.size);
  for (const [key, value] of metadata) {
    head.str(key);
    head.u32(value.type);
    if (value.type === GgufType.ARRAY) {
      head.u32(value.itemType);
      head.u64(value.items.length);
      for (const item of value.items) writeScalar(head, value.itemType, item);
    } else {
      writeScalar(head, value.type, value.value);
    }
  }
  const layout = tensors.map((t) => {
    const [width, ...outer] = t.shape;
    if (width === undefined) throw new Error(`tensor ${t.name}: its shape needs at least one dimension`);
    const rowBytes = tensorByteSize(t.type, width);
    const rows = outer.reduce((a, b) => a * b, 1);
    return { t, width, rowBytes, rows, total: rowBytes * rows };
  });
  let offset = 0;
  for (const { t, total } of layout) {
    head.str(t.name);
    head.u32(t.shape.length);
    for (const dim of t.shape) head.u64(dim);
    head.u32(t.type);
    head.u64(offset);
    offset += total;
    offset += (alignment - (offset % alignment)) % alignment;
  }
  head.pad(alignment);

  const partial = `${path}.partial`;
  const fd = openSync(partial, "w");
  let written = 0;
  try {
    written += writeSync(fd, head.bytes());
    for (const { t, width, rowBytes, rows, total } of layout) {
      const data = Buffer.alloc(total + ((alignment - (total % alignment)) % alignment));
      const row = new Float32Array(width);
      for (let r = 0; r < rows; r++) {
        row.fill(0);
        t.fillRow(r, row);
        encodeRow(t.type, row, data, r * rowBytes);
      }
      written += writeSync(fd, data);
    }
  } catch (err) {
    closeSync(fd);
    rmSync(partial, { force: true });
    throw err;
  }
  closeSync(fd);
  renameSync(partial, path);
  return { bytes: written };
}
