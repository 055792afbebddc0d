// cuda.cc: CUDA queries. Memory statistics and device properties need the CUDA headers;
// a shim built against a CPU-only libtorch reports CUDA as unavailable.
#include <torch/cuda.h>

#include "common.h"

#ifdef GOCLIP_WITH_CUDA
// Only the allocator's header and the runtime API: ATen/cuda/CUDAContext.h would pull in
// cuBLAS, cuSPARSE and cuda_fp16.h (which needs CCCL's <nv/target> on CUDA 13) for one
// function, declared here as libtorch_cuda exports it.
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <mutex>
#include <optional>

namespace at::cuda {
cudaDeviceProp *getDeviceProperties(c10::DeviceIndex device);
}  // namespace at::cuda
#endif

using namespace goclip;

namespace {
void no_cuda() { throw std::runtime_error("CUDA is not available in this build of the goclip shim"); }

#ifdef GOCLIP_WITH_CUDA
// The copy stream of each device: one stream from the pool, taken at first use and kept
// (pool streams are never destroyed).
c10::cuda::CUDAStream copy_stream(c10::DeviceIndex dev) {
  static std::mutex mu;
  static std::vector<std::optional<c10::cuda::CUDAStream>> streams;
  std::lock_guard<std::mutex> lock(mu);
  if (dev < 0) throw std::invalid_argument("copy_async: negative CUDA device index");
  if (static_cast<size_t>(dev) >= streams.size()) streams.resize(dev + 1);
  if (!streams[dev]) streams[dev] = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, dev);
  return *streams[dev];
}

// An in-flight copy: the device and the event recorded on its copy stream after it.
struct Copy {
  c10::DeviceIndex dev;
  cudaEvent_t done;
};
#endif
}  // namespace

extern "C" {

gt_status gt_cuda_available(int *out) { GT_TRY(*out = torch::cuda::is_available() ? 1 : 0); }
gt_status gt_cuda_device_count(int *out) {
  GT_TRY(*out = static_cast<int>(torch::cuda::device_count()));
}

gt_status gt_cuda_synchronize(int dev_index) {
  GT_TRY({
    if (!torch::cuda::is_available()) no_cuda();
    torch::cuda::synchronize(dev_index);
  });
}

gt_status gt_cuda_memory(int dev_index, int64_t *allocated, int64_t *peak) {
  GT_TRY({
#ifdef GOCLIP_WITH_CUDA
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(dev_index);
    auto &a = stats.allocated_bytes[0];  // StatType::AGGREGATE
    *allocated = a.current;
    *peak = a.peak;
#else
    (void)dev_index; (void)allocated; (void)peak;
    no_cuda();
#endif
  });
}

gt_status gt_cuda_reset_peak(int dev_index) {
  GT_TRY({
#ifdef GOCLIP_WITH_CUDA
    c10::cuda::CUDACachingAllocator::resetPeakStats(dev_index);
#else
    (void)dev_index;
    no_cuda();
#endif
  });
}

gt_status gt_cuda_properties(int dev_index, char *buf, int n, int64_t *total_memory,
                             int *major, int *minor, int *sm_count) {
  GT_TRY({
#ifdef GOCLIP_WITH_CUDA
    auto *p = at::cuda::getDeviceProperties(dev_index);
    std::snprintf(buf, n, "%s", p->name);
    *total_memory = static_cast<int64_t>(p->totalGlobalMem);
    *major = p->major;
    *minor = p->minor;
    *sm_count = p->multiProcessorCount;
#else
    (void)dev_index; (void)buf; (void)n; (void)total_memory; (void)major; (void)minor;
    (void)sm_count;
    no_cuda();
#endif
  });
}

gt_status gt_copy_async(const gt_tensor *ts, int n, int dev_index, gt_tensor *outs,
                        gt_copy *done) {
  GT_TRY({
#ifdef GOCLIP_WITH_CUDA
    if (!torch::cuda::is_available()) throw std::runtime_error("no CUDA device is available");
    const auto dev = static_cast<c10::DeviceIndex>(dev_index);
    const c10::Device target(c10::DeviceType::CUDA, dev);
    std::vector<at::Tensor> srcs;
    for (int i = 0; i < n; i++) {
      auto &t = T(ts[i]);
      if (!t.device().is_cpu())
        throw std::invalid_argument("copy_async: tensor " + std::to_string(i) + " is not on the CPU");
      srcs.push_back(t);
    }
    auto stream = copy_stream(dev);
    c10::cuda::CUDAStreamGuard guard(stream);  // the copies and their memory belong to it
    std::vector<at::Tensor> dsts;
    for (auto &t : srcs) dsts.push_back(t.to(target, /*non_blocking=*/true));
    auto *c = new Copy{dev, nullptr};
    cudaError_t err = cudaEventCreateWithFlags(&c->done, cudaEventDisableTiming);
    if (err == cudaSuccess) err = cudaEventRecord(c->done, stream.stream());
    if (err != cudaSuccess) {
      if (c->done != nullptr) cudaEventDestroy(c->done);
      delete c;
      C10_CUDA_CHECK(err);
    }
    for (int i = 0; i < n; i++) outs[i] = own(dsts[i]);
    *done = c;
#else
    (void)ts; (void)n; (void)dev_index; (void)outs; (void)done;
    no_cuda();
#endif
  });
}

gt_status gt_copy_wait(gt_copy done, const gt_tensor *ts, int n) {
  GT_TRY({
#ifdef GOCLIP_WITH_CUDA
    if (done == nullptr) throw std::invalid_argument("copy_wait: nil copy");
    auto *c = static_cast<Copy *>(done);
    auto cur = c10::cuda::getCurrentCUDAStream(c->dev);
    C10_CUDA_CHECK(cudaStreamWaitEvent(cur.stream(), c->done, 0));
    // Their memory came from the copy stream's pool: tell the allocator the current
    // stream uses it, so it is not handed to the next copy while kernels still read it.
    for (int i = 0; i < n; i++) {
      auto &t = T(ts[i]);
      if (t.is_cuda()) t.record_stream(cur.unwrap());
    }
#else
    (void)done; (void)ts; (void)n;
    no_cuda();
#endif
  });
}

void gt_copy_free(gt_copy done) {
#ifdef GOCLIP_WITH_CUDA
  if (done == nullptr) return;
  auto *c = static_cast<Copy *>(done);
  cudaEventDestroy(c->done);  // released once the event completes, if it has not yet
  delete c;
#else
  (void)done;
#endif
}

int gt_built_with_cuda(void) {
#ifdef GOCLIP_WITH_CUDA
  return 1;
#else
  return 0;
#endif
}

}  // extern "C"
