// Shared by the CUDA tests: they run on the CPU execution of the CUDA kernels (SEQKERN_CUDA_SIM=1, the
// default here, never skipped) or, with SEQKERN_CUDA_DEVICE=1 on a machine with a GPU, on the device.
if (process.env.SEQKERN_CUDA_DEVICE !== '1') process.env.SEQKERN_CUDA_SIM = '1';
process.env.SEQKERN_POISON = '1';

import { cudaAddon, type CudaAddon } from '../src/device.js';

/** The CUDA addon the tests use (the simulator unless SEQKERN_CUDA_DEVICE=1). */
export function cudaForTests(): CudaAddon {
  const a = cudaAddon();
  if (!a) throw new Error('the CUDA tests need build/Release/seqkern_sim.node (npm rebuild) or a GPU');
  return a;
}

export const simulated = process.env.SEQKERN_CUDA_DEVICE !== '1';
