package dataset

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"goclip/internal/testutil"
)

// resizeCase is one resize compared with PIL: src (W x H, random content) resampled
// over box to OW x OH; Crop > 0 compares ResizeCropUint8(src, Crop) with PIL's resize of
// the short side followed by the centre crop (CLIPImageProcessor's arithmetic).
type resizeCase struct {
	W, H, OW, OH int
	Box          [4]int
	Crop         int
	Noise        bool // values 0 or 255 only: every sum at the clipping limits
}

// TestResizeMatchesPIL: Resize, ResizeBox and ResizeCropUint8 against the venv's PIL
// (Image.resize with BICUBIC, box=, reducing_gap=None), bit for bit: downscales by
// small and large factors, upscales, one-pixel sides, boxes inside the image, skipped
// passes (one side unchanged), the data benchmark's 500x375 -> 224 and random images
// at the clipping limits.
func TestResizeMatchesPIL(t *testing.T) {
	py := testutil.PythonTorch(t, "PIL", "numpy")
	cases := []resizeCase{
		{W: 500, H: 375, Crop: 224},
		{W: 375, H: 500, Crop: 224},
		{W: 333, H: 500, Crop: 40},
		{W: 500, H: 375, OW: 298, OH: 224},
		{W: 500, H: 375, OW: 298, OH: 224, Noise: true},
		{W: 40, H: 30, OW: 224, OH: 168},
		{W: 40, H: 30, OW: 224, OH: 168, Noise: true},
		{W: 7, H: 5, OW: 3, OH: 2},
		{W: 1, H: 9, OW: 1, OH: 4},
		{W: 9, H: 1, OW: 20, OH: 3},
		{W: 1000, H: 20, OW: 10, OH: 20},
		{W: 640, H: 480, OW: 31, OH: 17, Noise: true},
		{W: 300, H: 200, OW: 300, OH: 120},
		{W: 300, H: 200, OW: 150, OH: 200},
		{W: 2, H: 2, OW: 5, OH: 5},
		{W: 500, H: 375, OW: 224, OH: 224, Box: [4]int{37, 11, 463, 362}},
		{W: 500, H: 375, OW: 224, OH: 224, Box: [4]int{0, 100, 120, 375}},
		{W: 224, H: 224, OW: 224, OH: 224, Box: [4]int{5, 3, 220, 218}},
		{W: 60, H: 50, OW: 64, OH: 64, Box: [4]int{50, 40, 60, 50}, Noise: true},
		{W: 257, H: 129, Crop: 224},
		{W: 100, H: 60, Crop: 224}, // upscale, then the crop needs no padding
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(7, 7))
	srcs := make([]RGB, len(cases))
	for i, c := range cases {
		img := NewRGB(c.W, c.H)
		for j := range img.Pix {
			if c.Noise {
				img.Pix[j] = uint8(255 * rng.IntN(2))
			} else {
				img.Pix[j] = uint8(int(uint8(j/3%c.W+j/(3*c.W))) + rng.IntN(64))
			}
		}
		srcs[i] = img
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%d.rgb", i)), img.Pix, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	spec, _ := json.Marshal(cases)
	if err := os.WriteFile(filepath.Join(dir, "cases.json"), spec, 0o644); err != nil {
		t.Fatal(err)
	}
	script := `
import sys, os, json
from PIL import Image
d = sys.argv[1]
for i, c in enumerate(json.load(open(os.path.join(d, "cases.json")))):
    im = Image.frombytes("RGB", (c["W"], c["H"]), open(os.path.join(d, "%d.rgb" % i), "rb").read())
    if c["Crop"]:
        s = c["Crop"]
        short, long = min(im.size), max(im.size)
        nl = int(s * long / short)
        size = (s, nl) if im.size[0] <= im.size[1] else (nl, s)
        im = im.resize(size, Image.BICUBIC, reducing_gap=None)
        top, left = (im.size[1] - s) // 2, (im.size[0] - s) // 2
        im = im.crop((left, top, left + s, top + s))
    else:
        box = c["Box"] if any(c["Box"]) else None
        im = im.resize((c["OW"], c["OH"]), Image.BICUBIC, box=box, reducing_gap=None)
    open(os.path.join(d, "%d.out" % i), "wb").write(im.tobytes())
`
	cmd := exec.Command(py, "-c", script, dir)
	cmd.Dir = os.TempDir()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for i, c := range cases {
		want, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("%d.out", i)))
		if err != nil {
			t.Fatal(err)
		}
		var got RGB
		switch {
		case c.Crop > 0:
			got = ResizeCropUint8(srcs[i], c.Crop)
		case c.Box != [4]int{}:
			got = ResizeBox(srcs[i], c.Box, c.OW, c.OH)
		default:
			got = Resize(srcs[i], c.OW, c.OH)
		}
		if !bytes.Equal(got.Pix, want) {
			n := 0
			for j := range want {
				if j >= len(got.Pix) || got.Pix[j] != want[j] {
					n++
				}
			}
			t.Errorf("case %d %+v: %dx%d, %d of %d values differ from PIL's", i, c, got.W, got.H, n, len(want))
		}
	}
}
