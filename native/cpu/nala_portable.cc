// The portable variant of the NaLaFormer kernels (compiled with this level's target flags; see binding.gyp).
#define SK_LEVEL_NS portable
#include "nala_impl.h"
