// The portable variant of the causal convolution tile (compiled with this level's target flags).
#define SK_LEVEL_NS portable
#include "conv_impl.h"
