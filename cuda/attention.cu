#include "kernels.h"
namespace sk_cuda {
int64_t attention_workspace(const AttentionArgs&) { return 0; }
cudaError_t attention(const AttentionArgs&, float*, int64_t, cudaStream_t) { return cudaErrorInvalidValue; }
}  // namespace sk_cuda
