// The backend loader: without the addon every op falls back to the float64 reference, with one warning.
import { afterEach, describe, expect, it, vi } from 'vitest';

async function freshSeqkern(env: Record<string, string>) {
  for (const [k, v] of Object.entries(env)) vi.stubEnv(k, v);
  vi.resetModules(); // a new module graph: the loader runs again under this environment
  return import('../src/index.js');
}

afterEach(() => {
  vi.unstubAllEnvs();
  vi.resetModules();
});

describe('backend loader', () => {
  it('falls back to the reference with a one-time warning when the addon is missing', async () => {
    const sk = await freshSeqkern({ SEQKERN_ADDON: '/nonexistent/seqkern.node', SEQKERN_BACKEND: 'reference' });
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    try {
      const q = sk.randn([1, 9, 1, 4], { seed: 1 }), k = sk.randn([1, 9, 1, 4], { seed: 2 });
      const v = sk.randn([1, 9, 2, 3], { seed: 3 }), beta = sk.rand([1, 9, 2], { seed: 4 });
      const a = sk.gatedDeltaRule({ q, k, v, beta });
      const b = sk.gatedDeltaRule({ q, k, v, beta });
      const ref = sk.gatedDeltaRuleReference({ q, k, v, beta });
      expect(sk.info().backend).toBe('reference');
      expect(sk.info().addonError).toContain('SEQKERN_BACKEND=reference');
      expect(a.o.dtype).toBe('float32');
      for (let i = 0; i < ref.o.data.length; i++) {
        expect(a.o.data[i]).toBe(Math.fround(ref.o.data[i])); // the reference, rounded once to float32
        expect(b.o.data[i]).toBe(a.o.data[i]);
      }
      await new Promise((r) => setImmediate(r)); // warnings are emitted on the next tick
      const ours = warnings.filter((w) => (w as { code?: string }).code === 'SEQKERN_NO_ADDON');
      expect(ours.length).toBe(1);
      expect(ours[0].message).toMatch(/npm rebuild seqkern/);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it("backend 'cpu' without the addon is a SeqkernError, not a silent fallback", async () => {
    const sk = await freshSeqkern({ SEQKERN_BACKEND: 'reference' });
    const args = { q: sk.randn([1, 2, 1, 4]), k: sk.randn([1, 2, 1, 4]), v: sk.randn([1, 2, 1, 4]), beta: sk.rand([1, 2, 1]) };
    let err: unknown;
    try {
      sk.gatedDeltaRule({ ...args, backend: 'cpu' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(sk.SeqkernError);
    expect((err as { code: string }).code).toBe('NATIVE_ERROR');
  });

  it('loads the addon by default and reports the SIMD level in use', async () => {
    const sk = await freshSeqkern({});
    const i = sk.info();
    expect(i.backend).toBe('cpu');
    expect(['avx512', 'avx2', 'portable']).toContain(i.simd);
    if (process.env.SEQKERN_SIMD) expect(i.simd).toBe(process.env.SEQKERN_SIMD);
    expect(i.threads).toBeGreaterThan(0);
  });
});
