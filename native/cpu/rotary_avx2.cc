// The avx2 variant of the rotary kernel (compiled with this level's target flags; see binding.gyp).
#define SK_LEVEL_NS avx2
#include "rotary_impl.h"
