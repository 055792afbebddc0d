package torch

/*
#include "goclip_torch.h"
*/
import "C"

import "unsafe"

// CUDAAvailable reports whether libtorch sees a usable CUDA device.
func CUDAAvailable() bool {
	var v C.int
	must("cuda_available", C.gt_cuda_available(&v))
	return v != 0
}

// CUDADeviceCount is the number of CUDA devices.
func CUDADeviceCount() int {
	var v C.int
	must("cuda_device_count", C.gt_cuda_device_count(&v))
	return int(v)
}

// BuiltWithCUDA reports whether the shim was compiled against a CUDA libtorch.
func BuiltWithCUDA() bool { return C.gt_built_with_cuda() != 0 }

// Synchronize waits for all work on a CUDA device; a no-op on the CPU.
func Synchronize(d Device) error {
	if !d.IsCUDA() {
		return nil
	}
	return statusErr("cuda_synchronize", C.gt_cuda_synchronize(C.int(d.Index)))
}

// CUDAMemory returns the bytes allocated now and at peak (since ResetPeakMemory) by the
// CUDA caching allocator.
func CUDAMemory(d Device) (allocated, peak int64, err error) {
	var a, p C.int64_t
	err = statusErr("cuda_memory", C.gt_cuda_memory(C.int(d.Index), &a, &p))
	return int64(a), int64(p), err
}

// ResetPeakMemory resets the peak statistic of CUDAMemory.
func ResetPeakMemory(d Device) error {
	return statusErr("cuda_reset_peak", C.gt_cuda_reset_peak(C.int(d.Index)))
}

// DeviceProperties describes a CUDA device.
type DeviceProperties struct {
	Name                string
	TotalMemory         int64
	Major, Minor        int // compute capability
	MultiProcessorCount int
}

// CUDAProperties returns the properties of a CUDA device.
func CUDAProperties(d Device) (DeviceProperties, error) {
	buf := make([]byte, 256)
	var total C.int64_t
	var major, minor, sms C.int
	err := statusErr("cuda_properties", C.gt_cuda_properties(C.int(d.Index), (*C.char)(unsafe.Pointer(&buf[0])), C.int(len(buf)), &total, &major, &minor, &sms))
	if err != nil {
		return DeviceProperties{}, err
	}
	return DeviceProperties{C.GoString((*C.char)(unsafe.Pointer(&buf[0]))), int64(total), int(major), int(minor), int(sms)}, nil
}
