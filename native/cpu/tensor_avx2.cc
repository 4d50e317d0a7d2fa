// The avx2 variant of the dtype conversion (compiled with this level's target flags; see sources.json).
#define SK_LEVEL_NS avx2
#include "tensor_impl.h"
