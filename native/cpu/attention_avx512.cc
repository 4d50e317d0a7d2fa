// The avx512 variant of the attention kernels (compiled with this level's target flags; see binding.gyp).
#define SK_LEVEL_NS avx512
#include "attention_impl.h"
