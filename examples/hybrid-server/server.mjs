#!/usr/bin/env node
// The example hybrid-model server (npm run example:server): POST /generate { prompt, maxTokens } streams
// tokens as server-sent events; GET /stats reports the queue and the event loop's delay. The model runs in
// a worker thread (engine.mjs); this thread only parses, queues and streams. A client that disconnects is
// cancelled; past maxBatch running + maxQueue waiting, a request is answered 503 at once.
import http from 'node:http';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { DEFAULT_CONFIG, encode, decode } from './model.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

export async function startServer({
  port = 0, host = '127.0.0.1', weights = path.join(here, 'weights.safetensors'), config = DEFAULT_CONFIG,
  maxBatch = 32, maxQueue = 64, maxTokensLimit = 1024,
} = {}) {
  const engine = new Worker(path.join(here, 'engine.mjs'), { workerData: { weights, config, maxBatch } });
  const streams = new Map(); // id -> { res, count, onToken }
  let nextId = 1;
  let tokensOut = 0;
  const delay = monitorEventLoopDelay({ resolution: 1 });
  delay.enable();
  let engineError = null;
  engine.on('error', (e) => { engineError = e; for (const s of streams.values()) s.res.destroy(e); });
  engine.on('message', (m) => {
    if (m.type !== 'tokens') return;
    for (const it of m.items) {
      const s = streams.get(it.id);
      if (!s) continue;
      tokensOut++;
      s.count++;
      s.res.write(`data: ${JSON.stringify({ token: it.token, text: decode([it.token]) })}\n\n`);
      if (it.done) {
        s.res.end(`event: done\ndata: ${JSON.stringify({ tokens: s.count })}\n\n`);
        streams.delete(it.id);
      }
    }
  });

  const json = (res, code, body) => {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };

  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url.startsWith('/stats')) {
      const body = { running: streams.size, tokens: tokensOut, eventLoopDelayP99Ms: delay.percentile(99) / 1e6, eventLoopDelayMaxMs: delay.max / 1e6 };
      if (req.url.includes('reset')) delay.reset();
      return json(res, 200, body);
    }
    if (req.method !== 'POST' || req.url !== '/generate') return json(res, 404, { error: 'POST /generate or GET /stats' });
    if (engineError) return json(res, 500, { error: `engine failed: ${engineError.message}` });
    if (streams.size >= maxBatch + maxQueue) return json(res, 503, { error: `busy: ${streams.size} requests running or queued (limit ${maxBatch + maxQueue})` });
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c) => { body += c; if (body.length > 1 << 20) req.destroy(); });
    req.on('end', () => {
      let p;
      try {
        p = JSON.parse(body || '{}');
      } catch {
        return json(res, 400, { error: 'expected a JSON body { prompt, maxTokens }' });
      }
      const maxTokens = p.maxTokens ?? 64;
      if (typeof p.prompt !== 'string' || p.prompt.length === 0) return json(res, 400, { error: 'expected prompt to be a non-empty string' });
      if (!Number.isInteger(maxTokens) || maxTokens < 1 || maxTokens > maxTokensLimit) return json(res, 400, { error: `expected maxTokens an integer in [1, ${maxTokensLimit}]` });
      const tokens = encode(p.prompt);
      if (tokens.length + maxTokens > config.maxContext) return json(res, 400, { error: `expected prompt + maxTokens within ${config.maxContext} tokens` });
      const id = nextId++;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
      streams.set(id, { res, count: 0 });
      res.on('close', () => {
        if (streams.delete(id)) engine.postMessage({ type: 'cancel', id }); // the client went away mid-stream
      });
      engine.postMessage({ type: 'add', id, tokens, maxTokens });
    });
  });
  await new Promise((r) => server.listen(port, host, r));
  const url = `http://${host}:${server.address().port}`;
  return {
    url,
    async close() {
      for (const s of streams.values()) s.res.destroy();
      await new Promise((r) => server.close(r));
      await engine.terminate();
    },
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const arg = (name, dflt) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? process.argv[i + 1] : dflt;
  };
  const s = await startServer({ port: Number(arg('port', 8080)), weights: arg('weights', undefined), maxBatch: Number(arg('max-batch', 32)), maxQueue: Number(arg('max-queue', 64)) });
  console.log(`listening ${s.url}  (POST /generate {"prompt":"...","maxTokens":32}; GET /stats)`);
  process.on('SIGINT', () => s.close().then(() => process.exit(0)));
}
