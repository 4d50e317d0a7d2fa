// The kernels of cuda/softmax.cu compiled by the host compiler against the CPU execution of CUDA.
#include "../softmax.cu"
