// The portable variant of the dtype conversion (compiled with this level's target flags; see sources.json).
#define SK_LEVEL_NS portable
#include "tensor_impl.h"
