// The avx512 variant of the dtype conversion (compiled with this level's target flags; see sources.json).
#define SK_LEVEL_NS avx512
#include "tensor_impl.h"
