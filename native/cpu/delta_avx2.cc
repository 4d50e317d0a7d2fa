// The avx2 variant of the delta kernels (compiled with this level's target flags; see binding.gyp).
#define SK_LEVEL_NS avx2
#include "delta_impl.h"
