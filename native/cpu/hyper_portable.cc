// The portable variant of HyperAttention's hashing and conversions (compiled with this level's target flags).
#define SK_LEVEL_NS portable
#include "hyper_impl.h"
