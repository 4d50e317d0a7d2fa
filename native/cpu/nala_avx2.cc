// The avx2 variant of the NaLaFormer kernels (compiled with this level's target flags; see binding.gyp).
#define SK_LEVEL_NS avx2
#include "nala_impl.h"
