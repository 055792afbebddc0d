// common.h: helpers shared by the shim's .cc files (not part of the C ABI).
#pragma once

#include <torch/torch.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

#include "goclip_torch.h"

// goclip supports libtorch 2.4 and newer (scripts/build-shim.sh refuses older ones).
#if TORCH_VERSION_MAJOR < 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR < 4)
#error "goclip's shim needs libtorch 2.4 or newer"
#endif

namespace goclip {

// Copies msg into a malloc'd C string for the caller to free().
inline char *status(const std::string &msg) {
  char *s = static_cast<char *>(std::malloc(msg.size() + 1));
  if (s != nullptr) std::memcpy(s, msg.c_str(), msg.size() + 1);
  return s;
}

inline at::Tensor &T(gt_tensor h) {
  if (h == nullptr) throw std::invalid_argument("nil tensor handle");
  return *static_cast<at::Tensor *>(h);
}

inline gt_tensor own(at::Tensor t) { return new at::Tensor(std::move(t)); }

at::ScalarType to_scalar_type(int code);
int from_scalar_type(at::ScalarType t);
c10::Device to_device(int type, int index);

inline std::vector<int64_t> dims(const int64_t *p, int n) {
  return std::vector<int64_t>(p, p + n);
}

// c10::Error messages carry a C++ backtrace in what(); keep the first line(s) only.
inline std::string clean(const char *what) {
  std::string s(what);
  auto pos = s.find("\nException raised from");
  if (pos != std::string::npos) s = s.substr(0, pos);
  return s;
}

// OpenMP keeps the intra-op thread count per OS thread (at::set_num_threads calls
// omp_set_num_threads, which sets the calling thread's count only), and Go runs a goroutine's
// cgo calls on whichever OS thread it is on. gt_set_num_threads records the count here;
// every shim call applies it to its own thread once (an atomic load otherwise), so that
// torch.SetThreads holds for the whole process, as its doc says.
extern std::atomic<int> threads_wanted;
inline void sync_threads() {
  thread_local int applied = 0;
  const int n = threads_wanted.load(std::memory_order_relaxed);
  if (n > 0 && n != applied) {
    at::set_num_threads(n);
    applied = n;
  }
}

}  // namespace goclip

// GT_TRY wraps the body of every extern "C" function: any exception becomes a status.
#define GT_TRY(...)                                                        \
  try {                                                                    \
    goclip::sync_threads();                                                \
    __VA_ARGS__;                                                                \
    return nullptr;                                                        \
  } catch (const c10::Error &e) {                                          \
    return goclip::status(goclip::clean(e.what_without_backtrace()));      \
  } catch (const std::exception &e) {                                      \
    return goclip::status(goclip::clean(e.what()));                        \
  } catch (...) {                                                          \
    return goclip::status("unknown C++ exception");                        \
  }
