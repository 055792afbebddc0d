package torch

/*
#include "goclip_torch.h"
*/
import "C"

import (
	"fmt"
	"strconv"
	"strings"
)

// DeviceType is CPU or CUDA.
type DeviceType int

// Device types; the values are the shim's codes.
const (
	CPUDevice DeviceType = iota
	CUDADevice
)

// Device names where a tensor lives.
type Device struct {
	Type  DeviceType
	Index int
}

// CPU is the host.
var CPU = Device{Type: CPUDevice}

// CUDA is the CUDA device with the given index.
func CUDA(index int) Device { return Device{Type: CUDADevice, Index: index} }

func (d Device) String() string {
	if d.Type == CUDADevice {
		return "cuda:" + strconv.Itoa(d.Index)
	}
	return "cpu"
}

// IsCUDA reports whether d is a CUDA device.
func (d Device) IsCUDA() bool { return d.Type == CUDADevice }

// ParseDevice accepts "cpu", "cuda" (device 0) and "cuda:N". It does not check that the
// device exists; see CheckDevice.
func ParseDevice(s string) (Device, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	switch {
	case s == "cpu":
		return CPU, nil
	case s == "cuda":
		return CUDA(0), nil
	case strings.HasPrefix(s, "cuda:"):
		n, err := strconv.Atoi(s[5:])
		if err != nil || n < 0 {
			return Device{}, fmt.Errorf("bad device %q: want cpu, cuda or cuda:N", s)
		}
		return CUDA(n), nil
	}
	return Device{}, fmt.Errorf("bad device %q: want cpu, cuda or cuda:N", s)
}

// CheckDevice returns an error naming the problem when d cannot be used here.
func CheckDevice(d Device) error {
	if !d.IsCUDA() {
		return nil
	}
	if !CUDAAvailable() {
		return fmt.Errorf("device %s requested but CUDA is not available (libtorch %s, shim built with CUDA: %v)", d, Version(), BuiltWithCUDA())
	}
	if n := CUDADeviceCount(); d.Index >= n {
		return fmt.Errorf("device %s requested but only %d CUDA device(s) are present", d, n)
	}
	return nil
}

// DefaultDevice is cuda:0 when CUDA is available, else the CPU.
func DefaultDevice() Device {
	if CUDAAvailable() {
		return CUDA(0)
	}
	return CPU
}
