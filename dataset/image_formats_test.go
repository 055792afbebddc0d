package dataset

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"goclip/internal/testutil"
)

// TestDecodeFormatsMatchPIL decodes WebP (lossy at odd and even sizes, lossy with
// alpha, lossless), GIF and BMP (24-bit and 8-bit palette) files written by PIL and
// compares every pixel with PIL's Image.open(f).convert("RGB") (exact).
func TestDecodeFormatsMatchPIL(t *testing.T) {
	py := testutil.PythonTorch(t, "PIL", "numpy")
	dir := t.TempDir()
	script := `
import sys, os, numpy as np
from PIL import Image
d = sys.argv[1]
rng = np.random.default_rng(0)
def picture(w, h, alpha=False):
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 7) % 256], -1).astype(np.int32)
    a = np.clip(a + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    if alpha:
        a = np.concatenate([a, ((x * 3 + y) % 256).astype(np.uint8)[..., None]], -1)
        return Image.fromarray(a, "RGBA")
    return Image.fromarray(a, "RGB")
cases = {
    "lossy_odd.webp": lambda f: picture(37, 29).save(f, quality=80),
    "lossy_even.webp": lambda f: picture(38, 30).save(f, quality=60),
    "lossy_alpha.webp": lambda f: picture(21, 18, True).save(f, quality=75),
    "lossless.webp": lambda f: picture(23, 17).save(f, lossless=True),
    "first.gif": lambda f: picture(31, 22).convert("P", palette=Image.ADAPTIVE, colors=64).save(f),
    "rgb.bmp": lambda f: picture(19, 13).save(f),
    "pal.bmp": lambda f: picture(18, 11).convert("P", palette=Image.ADAPTIVE, colors=32).save(f),
}
for name, write in cases.items():
    p = os.path.join(d, name)
    write(p)
    im = Image.open(p).convert("RGB")
    open(p + ".rgb", "wb").write(np.asarray(im).tobytes())
    open(p + ".size", "w").write("%d %d" % im.size)
`
	cmd := exec.Command(py, "-c", script, dir)
	cmd.Dir = os.TempDir()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, name := range []string{"lossy_odd.webp", "lossy_even.webp", "lossy_alpha.webp", "lossless.webp", "first.gif", "rgb.bmp", "pal.bmp"} {
		p := filepath.Join(dir, name)
		img, err := ReadImage(p, 0)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		want, _ := os.ReadFile(p + ".rgb")
		size, _ := os.ReadFile(p + ".size")
		var w, h int
		fmt.Sscanf(string(size), "%d %d", &w, &h)
		if img.W != w || img.H != h || len(img.Pix) != len(want) {
			t.Errorf("%s: %dx%d, PIL %dx%d", name, img.W, img.H, w, h)
			continue
		}
		diff, worst := 0, 0
		for i := range want {
			d := int(img.Pix[i]) - int(want[i])
			if d < 0 {
				d = -d
			}
			if d != 0 {
				diff++
				worst = max(worst, d)
			}
		}
		if diff > 0 {
			t.Errorf("%s: %d of %d values differ from PIL's (at most %d)", name, diff, len(want), worst)
		}
	}
}
