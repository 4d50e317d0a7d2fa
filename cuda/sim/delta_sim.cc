// The kernels of cuda/delta.cu compiled by the host compiler against the CPU execution of CUDA.
#include "../delta.cu"
