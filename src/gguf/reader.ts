import { readFileSync } from "node:fs";
import { GGUF_MAGIC, GgufType, type GgufScalar, type GgufScalarType, type GgufValue } from "./format.js";

/**
 * Reads a GGUF file's metadata with each value's exact GGUF type, so keys can be copied into a new file
 * unchanged (node-llama-cpp's own reader returns plain JS values and loses the types the writer needs).
 * Tensor descriptors and data are not read: the vocabulary files this is used on hold none.
 */
export function readGgufMetadata(path: string): Map<string, GgufValue> {
  const buf = readFileSync(path);
  let at = 0;
  const u32 = () => {
    const v = buf.readUInt32LE(at);
    at += 4;
    return v;
  };
  const u64 = () => {
    const v = buf.readBigUInt64LE(at);
    at += 8;
    return v;
  };
  const str = () => {
    const n = Number(u64());
    const s = buf.toString("utf8", at, at + n);
    at += n;
    return s;
  };
  const scalar = (type: GgufScalarType): GgufScalar => {
    switch (type) {
      case GgufType.UINT8:
        return buf.readUInt8(at++);
      case GgufType.INT8:
        return buf.readInt8(at++);
      case GgufType.UINT16: {
        const v = buf.readUInt16LE(at);
        at += 2;
        return v;
      }
      case GgufType.INT16: {
        const v = buf.readInt16LE(at);
        at += 2;
        return v;
      }
      case GgufType.UINT32:
        return u32();
      case GgufType.INT32: {
        const v = buf.readInt32LE(at);
        at += 4;
        return v;
      }
      case GgufType.FLOAT32: {
        const v = buf.readFloatLE(at);
        at += 4;
        return v;
      }
      case GgufType.BOOL:
        return buf.readUInt8(at++) !== 0;
      case GgufType.STRING:
        return str();
      case GgufType.UINT64:
        return u64();
      case GgufType.INT64: {
        const v = buf.readBigInt64LE(at);
        at += 8;
        return v;
      }
      case GgufType.FLOAT64: {
        const v = buf.readDoubleLE(at);
        at += 8;
        return v;
      }
    }
  };

  if (u32() !== GGUF_MAGIC) throw new Error(`${path} is not a GGUF file`);
  const version = u32();
  if (version < 2) throw new Error(`${path}: GGUF version ${version} is not supported`);
  u64(); // tensor count
  const count = Number(u64());
  const out = new Map<string, GgufValue>();
  for (let i = 0; i < count; i++) {
    const key = str();
    const type = u32() as GgufType;
    if (type === GgufType.ARRAY) {
      const itemType = u32() as GgufScalarType;
      const n = Number(u64());
      const items = new Array<GgufScalar>(n);
      for (let j = 0; j < n; j++) items[j] = scalar(itemType);
      out.set(key, { type, itemType, items });
    } else {
      out.set(key, { type, value: scalar(type) });
    }
  }
  return out;
}
