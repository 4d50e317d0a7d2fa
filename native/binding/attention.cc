// N-API glue of the attention family. STUB: being written (issue 8).
#include "common.h"

namespace sk {
void register_attention(Napi::Env, Napi::Object) {}
}  // namespace sk
