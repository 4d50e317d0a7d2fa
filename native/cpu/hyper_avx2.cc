// The avx2 variant of HyperAttention's hashing and conversions (compiled with this level's target flags).
#define SK_LEVEL_NS avx2
#include "hyper_impl.h"
