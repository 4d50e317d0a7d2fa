// A reader and writer of the safetensors format (huggingface/safetensors): an 8-byte little-endian header
// length, a JSON header { name: { dtype, shape, data_offsets: [begin, end] }, __metadata__?: {...} }, then
// the tensors' bytes. The reader checks everything a malformed file can get wrong and says what it found.
import { readFileSync, writeFileSync } from 'node:fs';

const DTYPE_BYTES = { F32: 4, F16: 2, BF16: 2 };

export class SafetensorsError extends Error {
  constructor(file, msg) {
    super(`safetensors ${file}: ${msg}`);
    this.name = 'SafetensorsError';
  }
}

/** Writes tensors ({ name, dtype: 'F32' | 'F16' | 'BF16', shape, data: Float32Array | Uint16Array }) to path. */
export function writeSafetensors(path, tensors, metadata = {}) {
  const header = { __metadata__: metadata };
  let offset = 0;
  for (const t of tensors) {
    const bytes = t.data.byteLength;
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + json.length) % 8)) % 8); // data starts 8-byte aligned
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  const parts = [head, Buffer.from(json)];
  for (const t of tensors) parts.push(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  writeFileSync(path, Buffer.concat(parts));
}

/**
 * Reads a safetensors file: { metadata, tensors: Map<name, { dtype, shape, data }> } with data a typed array
 * over a copy of the bytes (Float32Array for F32, Uint16Array of raw bits for F16/BF16).
 */
export function readSafetensors(path) {
  const buf = readFileSync(path);
  const fail = (msg) => { throw new SafetensorsError(path, msg); };
  if (buf.length < 8) fail(`expected at least 8 bytes (the header length), got ${buf.length}`);
  const n = buf.readBigUInt64LE(0);
  if (n > BigInt(buf.length - 8)) fail(`expected a header of at most ${buf.length - 8} bytes (the file's size), got a length of ${n}`);
  let header;
  try {
    header = JSON.parse(buf.subarray(8, 8 + Number(n)).toString('utf8'));
  } catch (e) {
    fail(`expected a JSON header, got unparsable text (${e.message})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) fail('expected the header to be a JSON object');
  const dataStart = 8 + Number(n);
  const dataLen = buf.length - dataStart;
  const tensors = new Map();
  const spans = [];
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    if (!e || typeof e !== 'object') fail(`expected tensor ${name} to be an object, got ${JSON.stringify(e)}`);
    const es = DTYPE_BYTES[e.dtype];
    if (!es) fail(`expected tensor ${name} of dtype F32, F16 or BF16, got ${JSON.stringify(e.dtype)}`);
    if (!Array.isArray(e.shape) || e.shape.some((d) => !Number.isSafeInteger(d) || d < 0)) fail(`expected tensor ${name} to have a shape of non-negative integers, got ${JSON.stringify(e.shape)}`);
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every(Number.isSafeInteger) || off[0] < 0 || off[1] < off[0]) fail(`expected tensor ${name} to have data_offsets [begin, end], got ${JSON.stringify(off)}`);
    if (off[1] > dataLen) fail(`expected tensor ${name}'s data within the ${dataLen} bytes after the header, got offsets ${JSON.stringify(off)}`);
    const count = e.shape.reduce((a, b) => a * b, 1);
    if (off[1] - off[0] !== count * es) fail(`expected tensor ${name} of shape [${e.shape}] and ${e.dtype} to take ${count * es} bytes, got ${off[1] - off[0]}`);
    spans.push([off[0], off[1], name]);
    const bytes = new Uint8Array(buf.subarray(dataStart + off[0], dataStart + off[1])); // a copy, aligned
    const data = e.dtype === 'F32' ? new Float32Array(bytes.buffer) : new Uint16Array(bytes.buffer);
    tensors.set(name, { dtype: e.dtype, shape: e.shape, data });
  }
  spans.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < spans.length; i++) {
    if (spans[i][0] < spans[i - 1][1]) fail(`expected tensors in disjoint byte ranges, got ${spans[i - 1][2]} and ${spans[i][2]} overlapping`);
  }
  return { metadata: header.__metadata__ ?? {}, tensors };
}
