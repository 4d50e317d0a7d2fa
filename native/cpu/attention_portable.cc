// The portable variant of the attention kernels (compiled with this level's target flags; see binding.gyp).
#define SK_LEVEL_NS portable
#include "attention_impl.h"
