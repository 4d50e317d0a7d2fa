// The portable variant of the rotary kernel (compiled with this level's target flags; see binding.gyp).
#define SK_LEVEL_NS portable
#include "rotary_impl.h"
