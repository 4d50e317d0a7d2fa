// The avx512 variant of the softmax kernels (compiled with this level's target flags; see sources.json).
#define SK_LEVEL_NS avx512
#include "softmax_impl.h"
