// The avx2 variant of the causal convolution tile (compiled with this level's target flags).
#define SK_LEVEL_NS avx2
#include "conv_impl.h"
