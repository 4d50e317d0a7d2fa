// The avx2 variant of the softmax kernels (compiled with this level's target flags; see sources.json).
#define SK_LEVEL_NS avx2
#include "softmax_impl.h"
