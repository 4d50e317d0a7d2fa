// The avx2 variant of the machine-limit probes (compiled with this level's target flags; see binding.gyp).
#define SK_LEVEL_NS avx2
#include "limits_impl.h"
