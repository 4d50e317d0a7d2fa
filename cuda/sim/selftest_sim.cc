// The kernels of cuda/sim/selftest.cu compiled by the host compiler against the CPU execution of CUDA.
#include "selftest.cu"
