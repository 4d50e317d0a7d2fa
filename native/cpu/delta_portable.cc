// The portable variant of the delta kernels (compiled with this level's target flags; see binding.gyp).
#define SK_LEVEL_NS portable
#include "delta_impl.h"
