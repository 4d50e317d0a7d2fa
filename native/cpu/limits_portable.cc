// The portable variant of the machine-limit probes (compiled with this level's target flags; see binding.gyp).
#define SK_LEVEL_NS portable
#include "limits_impl.h"
