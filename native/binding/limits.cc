#include "common.h"
namespace sk {
void register_limits(Napi::Env, Napi::Object) {}
}  // namespace sk
