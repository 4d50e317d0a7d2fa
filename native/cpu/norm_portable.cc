// The portable variant of the RMSNorm rows (compiled with this level's target flags).
#define SK_LEVEL_NS portable
#include "norm_impl.h"
