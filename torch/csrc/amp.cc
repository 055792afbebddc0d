// amp.cc: autocast regions on the calling thread (the device-typed API of libtorch 2.4+).
#include <ATen/autocast_mode.h>

#include "common.h"

using namespace goclip;

namespace {

c10::DeviceType device_type(int dev_type) {
  return dev_type == GT_CUDA ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
}

bool enabled(int dev_type) { return at::autocast::is_autocast_enabled(device_type(dev_type)); }

at::ScalarType dtype(int dev_type) { return at::autocast::get_autocast_dtype(device_type(dev_type)); }

void set(int dev_type, bool on, at::ScalarType t) {
  at::autocast::set_autocast_enabled(device_type(dev_type), on);
  at::autocast::set_autocast_dtype(device_type(dev_type), t);
}

}  // namespace

extern "C" {

gt_status gt_autocast_enter(int dev_type, int dt, int *prev_enabled, int *prev_dtype) {
  GT_TRY({
    auto t = to_scalar_type(dt);
    if (t != at::kBFloat16 && t != at::kHalf)
      throw std::invalid_argument("autocast: dtype must be bfloat16 or float16");
    if (dev_type == GT_CPU && t != at::kBFloat16)
      throw std::invalid_argument("autocast: the CPU supports only bfloat16");
    *prev_enabled = enabled(dev_type) ? 1 : 0;
    *prev_dtype = from_scalar_type(dtype(dev_type));
    set(dev_type, true, t);
    at::autocast::increment_nesting();
  });
}

gt_status gt_autocast_exit(int dev_type, int prev_enabled, int prev_dtype) {
  GT_TRY({
    // Leaving the outermost region frees the cast-weight cache, as torch.autocast does.
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    set(dev_type, prev_enabled != 0, to_scalar_type(prev_dtype));
  });
}

}  // extern "C"
