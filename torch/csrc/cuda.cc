// cuda.cc: CUDA queries. Memory statistics and device properties need the CUDA headers;
// a shim built against a CPU-only libtorch reports CUDA as unavailable.
#include <torch/cuda.h>

#include "common.h"

#ifdef GOCLIP_WITH_CUDA
// Only the allocator's header and the runtime API: ATen/cuda/CUDAContext.h would pull in
// cuBLAS, cuSPARSE and cuda_fp16.h (which needs CCCL's <nv/target> on CUDA 13) for one
// function, declared here as libtorch_cuda exports it.
#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime_api.h>

namespace at::cuda {
cudaDeviceProp *getDeviceProperties(c10::DeviceIndex device);
}  // namespace at::cuda
#endif

using namespace goclip;

namespace {
void no_cuda() { throw std::runtime_error("CUDA is not available in this build of the goclip shim"); }
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

int gt_built_with_cuda(void) {
#ifdef GOCLIP_WITH_CUDA
  return 1;
#else
  return 0;
#endif
}

}  // extern "C"
