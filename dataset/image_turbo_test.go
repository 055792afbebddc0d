//go:build jpegturbo && cgo

package dataset

import (
	"bytes"
	"fmt"
	"image/jpeg"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"goclip/internal/jpegturbo"
	"goclip/internal/testutil"
)

// TestJPEGTurboMatchesPIL (built with -tags jpegturbo): JPEGs written by PIL with
// 4:2:0, 4:2:2 and 4:4:4 chroma, greyscale and progressive decode exactly as PIL
// decodes them; a truncated one is refused; and the decode rate against image/jpeg is
// logged.
func TestJPEGTurboMatchesPIL(t *testing.T) {
	py := testutil.PythonTorch(t, "PIL", "numpy")
	dir := t.TempDir()
	script := `
import sys, os, numpy as np
from PIL import Image
d = sys.argv[1]
rng = np.random.default_rng(1)
y, x = np.mgrid[0:375, 0:500]
a = np.stack([x * 255 // 499, y * 255 // 374, ((x + y) * 3) % 256], -1)
a = np.clip(a + rng.integers(-30, 30, a.shape), 0, 255).astype(np.uint8)
im = Image.fromarray(a, "RGB")
im.save(os.path.join(d, "s420.jpg"), quality=90, subsampling=2)
im.save(os.path.join(d, "s422.jpg"), quality=85, subsampling=1)
im.crop((0, 0, 333, 211)).save(os.path.join(d, "s444.jpg"), quality=95, subsampling=0)
im.convert("L").save(os.path.join(d, "grey.jpg"), quality=90)
im.crop((3, 5, 250, 187)).save(os.path.join(d, "prog.jpg"), quality=80, progressive=True)
for f in os.listdir(d):
    p = os.path.join(d, f)
    open(p + ".rgb", "wb").write(np.asarray(Image.open(p).convert("RGB")).tobytes())
`
	cmd := exec.Command(py, "-c", script, dir)
	cmd.Dir = os.TempDir()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, name := range []string{"s420.jpg", "s422.jpg", "s444.jpg", "grey.jpg", "prog.jpg"} {
		data, _ := os.ReadFile(filepath.Join(dir, name))
		want, _ := os.ReadFile(filepath.Join(dir, name+".rgb"))
		img, err := DecodeImage(data, name, 0)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(img.Pix, want) {
			n := 0
			for i := range want {
				if i < len(img.Pix) && img.Pix[i] != want[i] {
					n++
				}
			}
			t.Errorf("%s: %d of %d values differ from PIL's", name, n, len(want))
		}
	}
	data, _ := os.ReadFile(filepath.Join(dir, "s420.jpg"))
	if _, _, _, err := jpegturbo.Decode(data[:len(data)/2], DefaultMaxPixels); err == nil {
		t.Error("a truncated JPEG decoded")
	}
	// Decode rate on one goroutine, 500x375 4:2:0.
	rate := func(f func()) float64 {
		start, n := time.Now(), 0
		for time.Since(start) < time.Second {
			f()
			n++
		}
		return float64(n) / time.Since(start).Seconds()
	}
	turbo := rate(func() { jpegturbo.Decode(data, DefaultMaxPixels) })
	goRate := rate(func() { jpeg.Decode(bytes.NewReader(data)) })
	goRGB := rate(func() { // the Go path of DecodeImage: image/jpeg, then libjpeg's fancy upsampling and colour tables
		m, _ := jpeg.Decode(bytes.NewReader(data))
		toRGB(m, false)
	})
	t.Log(fmt.Sprintf("500x375 4:2:0 JPEG to RGB, one goroutine: libjpeg-turbo %.0f images/s; image/jpeg %.0f images/s to YCbCr (%.2fx), %.0f images/s to RGB as DecodeImage without the tag (%.2fx)",
		turbo, goRate, turbo/goRate, goRGB, turbo/goRGB))
}
