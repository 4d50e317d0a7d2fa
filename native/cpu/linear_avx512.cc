// The avx512 variant of linear's kernels (compiled with this level's target flags).
#define SK_LEVEL_NS avx512
#include "linear_impl.h"
