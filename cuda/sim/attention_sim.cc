// The kernels of cuda/attention.cu compiled by the host compiler against the CPU execution of CUDA.
#include "../attention.cu"
