// The avx2 variant of the RMSNorm rows (compiled with this level's target flags).
#define SK_LEVEL_NS avx2
#include "norm_impl.h"
