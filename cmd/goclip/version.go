package main

import (
	"encoding/json"
	"fmt"
	"runtime"

	"github.com/urfave/cli/v2"

	"goclip/dataset"
	"goclip/torch"
)

// version is goclip's version; release builds set it with
// -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// versionJSONFlag is version's --json.
var versionJSONFlag = &cli.BoolFlag{Name: "json", Usage: "print one JSON object", EnvVars: []string{"GOCLIP_VERSION_JSON"}}

var versionCommand = &cli.Command{
	Name:  "version",
	Usage: "print goclip's version, the libtorch it runs on, the CUDA devices it sees and its JPEG decoder",
	Description: `Prints goclip's version, the version of libtorch the shim library was built
against, whether that libtorch was built with CUDA, whether CUDA is usable here, and
how many CUDA devices are visible, and which JPEG decoder this build has (libjpeg-turbo,
as make build builds it where the library is installed, or Go's image/jpeg).

Examples:
   goclip version
   goclip version --json`,
	Flags:  []cli.Flag{versionJSONFlag},
	Action: torchAction(runVersion),
}

// versionInfo is what `goclip version --json` prints.
type versionInfo struct {
	Goclip         string `json:"goclip"`
	Go             string `json:"go"`
	Torch          string `json:"torch"`
	BuiltWithCUDA  bool   `json:"built_with_cuda"`
	CUDAAvailable  bool   `json:"cuda_available"`
	CUDADevices    int    `json:"cuda_devices"`
	DefaultThreads int    `json:"threads"`
	JPEGDecoder    string `json:"jpeg_decoder"`
}

func runVersion(c *cli.Context) error {
	v := versionInfo{
		Goclip:         version,
		Go:             runtime.Version(),
		Torch:          torch.Version(),
		BuiltWithCUDA:  torch.BuiltWithCUDA(),
		CUDAAvailable:  torch.CUDAAvailable(),
		DefaultThreads: torch.Threads(),
		JPEGDecoder:    dataset.JPEGDecoder(),
	}
	if v.CUDAAvailable {
		v.CUDADevices = torch.CUDADeviceCount()
	}
	w := c.App.Writer
	if versionJSONFlag.Get(c) {
		return json.NewEncoder(w).Encode(v)
	}
	fmt.Fprintf(w, "goclip %s (%s)\n", v.Goclip, v.Go)
	fmt.Fprintf(w, "libtorch %s, built with CUDA: %v\n", v.Torch, v.BuiltWithCUDA)
	switch {
	case v.CUDAAvailable:
		fmt.Fprintf(w, "CUDA available: true, devices: %d\n", v.CUDADevices)
	case v.BuiltWithCUDA:
		fmt.Fprintln(w, "CUDA available: false (no CUDA device or driver visible on this machine): goclip runs on the CPU")
	default:
		fmt.Fprintln(w, "CUDA available: false (this shim was built without CUDA; scripts/build-shim.sh --require-cuda says why): goclip runs on the CPU")
	}
	fmt.Fprintf(w, "intra-op threads: %d\n", v.DefaultThreads)
	fmt.Fprintf(w, "JPEG decoder: %s\n", v.JPEGDecoder)
	return nil
}
