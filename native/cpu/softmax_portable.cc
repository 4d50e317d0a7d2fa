// The portable variant of the softmax kernels (compiled with this level's target flags; see sources.json).
#define SK_LEVEL_NS portable
#include "softmax_impl.h"
