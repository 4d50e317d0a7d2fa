// The kernels of cuda/limits.cu compiled by the host compiler against the CPU execution of CUDA.
#include "../limits.cu"
