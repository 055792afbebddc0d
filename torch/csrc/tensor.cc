// tensor.cc: library queries, RNG, tensor creation, host copies and conversions.
#include <ATen/CPUGeneratorImpl.h>

#include "common.h"

namespace goclip {

std::atomic<int> threads_wanted{0};  // 0: libtorch's default, never set

at::ScalarType to_scalar_type(int code) {
  switch (code) {
    case GT_F32: return at::kFloat;
    case GT_F16: return at::kHalf;
    case GT_BF16: return at::kBFloat16;
    case GT_F64: return at::kDouble;
    case GT_I64: return at::kLong;
    case GT_I32: return at::kInt;
    case GT_U8: return at::kByte;
    case GT_BOOL: return at::kBool;
    case GT_I8: return at::kChar;
    case GT_I16: return at::kShort;
  }
  throw std::invalid_argument("unknown dtype code " + std::to_string(code));
}

int from_scalar_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return GT_F32;
    case at::kHalf: return GT_F16;
    case at::kBFloat16: return GT_BF16;
    case at::kDouble: return GT_F64;
    case at::kLong: return GT_I64;
    case at::kInt: return GT_I32;
    case at::kByte: return GT_U8;
    case at::kBool: return GT_BOOL;
    case at::kChar: return GT_I8;
    case at::kShort: return GT_I16;
    default: break;
  }
  throw std::invalid_argument(std::string("unsupported dtype ") + c10::toString(t));
}

c10::Device to_device(int type, int index) {
  if (type == GT_CPU) return c10::Device(c10::kCPU);
  if (type == GT_CUDA) return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
  throw std::invalid_argument("unknown device type " + std::to_string(type));
}

static at::TensorOptions options(int dtype, int dev_type, int dev_index) {
  return at::TensorOptions().dtype(to_scalar_type(dtype)).device(to_device(dev_type, dev_index));
}

static at::Generator generator(int dev_type, int dev_index) {
  if (dev_type == GT_CPU) return at::detail::getDefaultCPUGenerator();
  return at::globalContext().defaultGenerator(to_device(dev_type, dev_index));
}

}  // namespace goclip

using namespace goclip;

extern "C" {

gt_status gt_version(char *buf, int n) {
  GT_TRY({
    std::snprintf(buf, n, "%d.%d.%d", TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR,
                  TORCH_VERSION_PATCH);
  });
}

gt_status gt_set_num_threads(int n) {
  GT_TRY({
    if (n < 1) throw std::invalid_argument("set_num_threads: n must be >= 1, got " + std::to_string(n));
    goclip::threads_wanted.store(n, std::memory_order_relaxed);
    goclip::sync_threads();
  });
}
gt_status gt_get_num_threads(int *out) { GT_TRY(*out = at::get_num_threads()); }
gt_status gt_manual_seed(uint64_t seed) { GT_TRY(torch::manual_seed(seed)); }

gt_status gt_rng_state(int dev_type, int dev_index, gt_tensor *out) {
  GT_TRY({
    auto gen = generator(dev_type, dev_index);
    std::lock_guard<std::mutex> lock(gen.mutex());
    *out = own(gen.get_state());
  });
}

gt_status gt_set_rng_state(int dev_type, int dev_index, gt_tensor state) {
  GT_TRY({
    auto gen = generator(dev_type, dev_index);
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(T(state));
  });
}

void gt_free(gt_tensor t) { delete static_cast<at::Tensor *>(t); }

gt_status gt_from_data(const void *data, int64_t nbytes, const int64_t *shape, int ndim,
                       int dtype, int dev_type, int dev_index, gt_tensor *out) {
  GT_TRY({
    auto cpu = at::empty(dims(shape, ndim), options(dtype, GT_CPU, 0));
    int64_t want = cpu.numel() * static_cast<int64_t>(cpu.element_size());
    if (want != nbytes)
      throw std::invalid_argument("from_data: " + std::to_string(nbytes) +
                                  " bytes for a tensor of " + std::to_string(want));
    if (nbytes > 0) std::memcpy(cpu.data_ptr(), data, nbytes);
    if (dev_type != GT_CPU) cpu = cpu.to(to_device(dev_type, dev_index));
    *out = own(cpu);
  });
}

gt_status gt_from_data_pinned(const void *data, int64_t nbytes, const int64_t *shape, int ndim,
                              int dtype, gt_tensor *out) {
  GT_TRY({
    auto opts = options(dtype, GT_CPU, 0).pinned_memory(at::hasCUDA());
    auto cpu = at::empty(dims(shape, ndim), opts);
    int64_t want = cpu.numel() * static_cast<int64_t>(cpu.element_size());
    if (want != nbytes)
      throw std::invalid_argument("from_data_pinned: " + std::to_string(nbytes) +
                                  " bytes for a tensor of " + std::to_string(want));
    if (nbytes > 0) std::memcpy(cpu.data_ptr(), data, nbytes);
    *out = own(cpu);
  });
}

gt_status gt_to_host(gt_tensor t, void *dst, int64_t nbytes) {
  GT_TRY({
    auto c = T(t).detach().to(c10::kCPU).contiguous();
    int64_t have = c.numel() * static_cast<int64_t>(c.element_size());
    if (have != nbytes)
      throw std::invalid_argument("to_host: tensor has " + std::to_string(have) +
                                  " bytes, buffer " + std::to_string(nbytes));
    if (nbytes > 0) std::memcpy(dst, c.data_ptr(), nbytes);
  });
}

gt_status gt_shape(gt_tensor t, int *ndim, int64_t *sizes) {
  GT_TRY({
    auto s = T(t).sizes();
    if (s.size() > 16) throw std::invalid_argument("more than 16 dimensions");
    *ndim = static_cast<int>(s.size());
    for (size_t i = 0; i < s.size(); i++) sizes[i] = s[i];
  });
}

gt_status gt_info(gt_tensor t, int *dtype, int *dev_type, int *dev_index, int *requires_grad) {
  GT_TRY({
    auto &x = T(t);
    *dtype = from_scalar_type(x.scalar_type());
    *dev_type = x.is_cuda() ? GT_CUDA : GT_CPU;
    *dev_index = x.is_cuda() ? x.device().index() : 0;
    *requires_grad = x.requires_grad() ? 1 : 0;
  });
}

gt_status gt_item(gt_tensor t, double *out) { GT_TRY(*out = T(t).item<double>()); }

gt_status gt_full(const int64_t *shape, int ndim, double value, int dtype, int dev_type,
                  int dev_index, gt_tensor *out) {
  GT_TRY(*out = own(at::full(dims(shape, ndim), value, options(dtype, dev_type, dev_index))));
}

gt_status gt_random(int kind, const int64_t *shape, int ndim, int dtype, int dev_type,
                    int dev_index, gt_tensor *out) {
  GT_TRY({
    auto o = options(dtype, dev_type, dev_index);
    auto d = dims(shape, ndim);
    *out = own(kind == 0 ? at::rand(d, o) : at::randn(d, o));
  });
}

gt_status gt_randint(int64_t low, int64_t high, const int64_t *shape, int ndim, int dev_type,
                     int dev_index, gt_tensor *out) {
  GT_TRY(*out = own(at::randint(low, high, dims(shape, ndim),
                                options(GT_I64, dev_type, dev_index))));
}

gt_status gt_arange(double start, double end, double step, int dtype, int dev_type,
                    int dev_index, gt_tensor *out) {
  GT_TRY(*out = own(at::arange(start, end, step, options(dtype, dev_type, dev_index))));
}

gt_status gt_to(gt_tensor t, int dtype, int dev_type, int dev_index, int non_blocking,
                gt_tensor *out) {
  GT_TRY(*out = own(T(t).to(to_device(dev_type, dev_index), to_scalar_type(dtype),
                            non_blocking != 0)));
}

gt_status gt_pin_memory(gt_tensor t, gt_tensor *out) {
  GT_TRY({
    auto &x = T(t);
    *out = own(at::hasCUDA() ? x.pin_memory() : x.clone());
  });
}

gt_status gt_clone(gt_tensor t, gt_tensor *out) { GT_TRY(*out = own(T(t).clone())); }
gt_status gt_alias(gt_tensor t, gt_tensor *out) { GT_TRY(*out = own(T(t))); }

}  // extern "C"
