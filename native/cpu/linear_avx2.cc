// The avx2 variant of linear's kernels (compiled with this level's target flags).
#define SK_LEVEL_NS avx2
#include "linear_impl.h"
