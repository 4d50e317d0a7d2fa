// The avx512 variant of the machine-limit probes (compiled with this level's target flags; see binding.gyp).
#define SK_LEVEL_NS avx512
#include "limits_impl.h"
