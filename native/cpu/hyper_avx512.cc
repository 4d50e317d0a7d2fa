// The avx512 variant of HyperAttention's hashing and conversions (compiled with this level's target flags).
#define SK_LEVEL_NS avx512
#include "hyper_impl.h"
