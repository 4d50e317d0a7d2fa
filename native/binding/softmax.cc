// N-API glue of the softmax family. STUB: being written (issue 8).
#include "common.h"

namespace sk {
void register_softmax(Napi::Env, Napi::Object) {}
}  // namespace sk
