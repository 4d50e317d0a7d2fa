// The avx512 variant of the NaLaFormer kernels (compiled with this level's target flags; see binding.gyp).
#define SK_LEVEL_NS avx512
#include "nala_impl.h"
