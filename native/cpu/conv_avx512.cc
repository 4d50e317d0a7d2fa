// The avx512 variant of the causal convolution tile (compiled with this level's target flags).
#define SK_LEVEL_NS avx512
#include "conv_impl.h"
