// The model's thread (a worker_thread, so the HTTP thread's event loop never waits for a forward pass).
// Continuous batching: each turn of the loop prefills the requests that arrived (one varlen forward over
// all their prompts) and runs one batched decode step over every running sequence; finished and cancelled
// sequences leave, waiting ones join, and at most maxBatch run at once. The model's state pools hold a slot
// per running sequence (released when it finishes or is cancelled).
import { parentPort, workerData } from 'node:worker_threads';
import { openModel } from './model.mjs';

const { weights, config, maxBatch } = workerData;
const model = openModel(weights, config, { maxSeqs: maxBatch });
const waiting = [];      // { id, tokens, maxTokens }
const running = new Map(); // id -> { seq, last, left }
const cancelled = new Set();
let wake = null;

parentPort.on('message', (m) => {
  if (m.type === 'add') waiting.push(m);
  else if (m.type === 'cancel') cancelled.add(m.id);
  if (wake) { wake(); wake = null; }
});

function finish(id) {
  const r = running.get(id);
  if (r) model.release(r.seq); // its state-pool slots and cache blocks go back
  running.delete(id);
  cancelled.delete(id);
}

for (;;) {
  if (waiting.length === 0 && running.size === 0) await new Promise((r) => { wake = r; });
  // messages that arrived during the last forward
  await new Promise((r) => setImmediate(r));
  for (const id of cancelled) {
    if (running.has(id)) finish(id);
    const w = waiting.findIndex((x) => x.id === id);
    if (w >= 0) waiting.splice(w, 1);
    cancelled.delete(id);
  }
  const out = [];
  const joining = waiting.splice(0, Math.max(0, maxBatch - running.size));
  if (joining.length > 0) {
    const seqs = joining.map(() => model.newSequence());
    const first = model.forward(seqs, joining.map((j) => j.tokens));
    joining.forEach((j, i) => {
      const left = j.maxTokens - 1;
      out.push({ id: j.id, token: first[i], done: left <= 0 });
      if (left > 0) running.set(j.id, { seq: seqs[i], last: first[i], left });
      else model.release(seqs[i]);
    });
  }
  const ids = [...running.keys()].filter((id) => !joining.some((j) => j.id === id));
  if (ids.length > 0) {
    const rs = ids.map((id) => running.get(id));
    const next = model.forward(rs.map((r) => r.seq), rs.map((r) => [r.last]));
    ids.forEach((id, i) => {
      const r = rs[i];
      r.last = next[i];
      r.left--;
      out.push({ id, token: next[i], done: r.left <= 0 });
      if (r.left <= 0) finish(id);
    });
  }
  if (out.length) parentPort.postMessage({ type: 'tokens', items: out });
}
