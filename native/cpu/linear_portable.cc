// The portable variant of linear's kernels (compiled with this level's target flags).
#define SK_LEVEL_NS portable
#include "linear_impl.h"
