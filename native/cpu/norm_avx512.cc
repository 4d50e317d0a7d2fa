// The avx512 variant of the RMSNorm rows (compiled with this level's target flags).
#define SK_LEVEL_NS avx512
#include "norm_impl.h"
