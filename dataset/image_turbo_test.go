//go:build jpegturbo && cgo

package dataset

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"goclip/internal/jpegturbo"
	"goclip/internal/testutil"
)

// turboJPEGScript writes JPEGs with the PIL of the interpreter that runs it (PIL only,
// no numpy: Debian's python3-pil has no numpy beside it) into argv[1]: 4:2:0, 4:2:2 and
// 4:4:4 chroma, greyscale, progressive, quality 100, odd and tiny sizes, a portrait;
// then, for every .jpg in the folder (the Go-written one too), PIL's decode
// (Image.open(f).convert("RGB")) as .rgb and CLIPImageProcessor's resize of the short
// side to 224 (BICUBIC) and centre crop as .pre224. It prints PIL's version and its
// libjpeg-turbo's.
const turboJPEGScript = `
import sys, os, random
from PIL import Image, features
d = sys.argv[1]
rng = random.Random(1)
def picture(w, h, noise=30):
    px = bytearray(3 * w * h)
    i = 0
    for y in range(h):
        for x in range(w):
            n = rng.randrange(-noise, noise)
            for v in (x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), ((x + y) * 3) % 256):
                px[i] = min(255, max(0, v + n))
                i += 1
    return Image.frombytes("RGB", (w, h), bytes(px))
im = picture(500, 375)
im.save(os.path.join(d, "s420.jpg"), quality=90, subsampling=2)
im.save(os.path.join(d, "s422.jpg"), quality=85, subsampling=1)
im.crop((0, 0, 333, 211)).save(os.path.join(d, "s444.jpg"), quality=95, subsampling=0)
im.convert("L").save(os.path.join(d, "grey.jpg"), quality=90)
im.crop((3, 5, 250, 187)).save(os.path.join(d, "prog.jpg"), quality=80, progressive=True)
picture(120, 90, 120).save(os.path.join(d, "q100.jpg"), quality=100, subsampling=2)
picture(37, 29).save(os.path.join(d, "odd420.jpg"), quality=75, subsampling=2)
picture(35, 17).save(os.path.join(d, "odd422.jpg"), quality=75, subsampling=1)
picture(3, 2).save(os.path.join(d, "tiny.jpg"), quality=90, subsampling=2)
im.transpose(Image.Transpose.ROTATE_90).save(os.path.join(d, "portrait.jpg"), quality=90)
for f in sorted(os.listdir(d)):
    if not f.endswith(".jpg"):
        continue
    p = os.path.join(d, f)
    im = Image.open(p).convert("RGB")
    open(p + ".rgb", "wb").write(im.tobytes())
    short, long = min(im.size), max(im.size)
    nl = int(224 * long / short)
    size = (224, nl) if im.size[0] <= im.size[1] else (nl, 224)
    im = im.resize(size, Image.BICUBIC, reducing_gap=None)
    top, left = (im.size[1] - 224) // 2, (im.size[0] - 224) // 2
    open(p + ".pre224", "wb").write(im.crop((left, top, left + 224, top + 224)).tobytes())
print("PIL", Image.__version__, "libjpeg-turbo", features.version_feature("libjpeg_turbo"))
`

// checkTurboAgainstPIL has py's PIL write and decode JPEGs (turboJPEGScript, plus a
// 500x375 4:2:0 JPEG written by Go's image/jpeg, as the data benchmark's) and checks
// that DecodeImage gives PIL's pixels and ResizeCropUint8 PIL's 224 x 224 crop, bit for
// bit. It returns the folder and what the script printed (PIL's versions).
func checkTurboAgainstPIL(t *testing.T, py string) (dir, versions string) {
	t.Helper()
	dir = t.TempDir()
	m := image.NewRGBA(image.Rect(0, 0, 500, 375))
	for y := range 375 {
		for x := range 500 {
			m.SetRGBA(x, y, color.RGBA{uint8(x / 2), uint8(y * 2 / 3), uint8((x ^ y) & 255), 255})
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, m, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.jpg"), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, "-c", turboJPEGScript, dir)
	cmd.Dir = os.TempDir()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", py, err, out)
	}
	versions = strings.TrimSpace(string(out))
	t.Logf("%s: %s", py, versions)
	names, _ := filepath.Glob(filepath.Join(dir, "*.jpg"))
	if len(names) != 11 {
		t.Fatalf("%d JPEGs written, want 11", len(names))
	}
	for _, p := range names {
		name := filepath.Base(p)
		data, _ := os.ReadFile(p)
		want, _ := os.ReadFile(p + ".rgb")
		img, err := DecodeImage(data, name, 0)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if n := differ(img.Pix, want); n > 0 {
			t.Errorf("%s: %d of %d decoded values differ from PIL's", name, n, len(want))
			continue
		}
		pre, _ := os.ReadFile(p + ".pre224")
		if n := differ(ResizeCropUint8(img, 224).Pix, pre); n > 0 {
			t.Errorf("%s: %d of %d values of the 224 crop differ from PIL's", name, n, len(pre))
		}
	}
	return dir, versions
}

// differ counts the values of want that got does not hold (all of them when the
// lengths differ).
func differ(got, want []uint8) int {
	if len(got) != len(want) {
		return max(len(got), len(want))
	}
	n := 0
	for i := range want {
		if got[i] != want[i] {
			n++
		}
	}
	return n
}

// TestJPEGTurboMatchesPIL (built with -tags jpegturbo): the venv's PIL (its wheel
// bundles its own libjpeg-turbo) and goclip decode and preprocess every JPEG of
// checkTurboAgainstPIL identically; a truncated JPEG is refused; the decode rate against
// image/jpeg is logged.
func TestJPEGTurboMatchesPIL(t *testing.T) {
	dir, _ := checkTurboAgainstPIL(t, testutil.PythonTorch(t, "PIL"))
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
	t.Logf("500x375 4:2:0 JPEG to RGB, one goroutine: libjpeg-turbo %.0f images/s; image/jpeg %.0f images/s to YCbCr (%.2fx), %.0f images/s to RGB as DecodeImage without the tag (%.2fx)",
		turbo, goRate, turbo/goRate, goRGB, turbo/goRGB)
}

// TestJPEGTurboMatchesDebianPIL (built with -tags jpegturbo): Debian's python3-pil, on
// the same libjpeg-turbo goclip links (Debian's libjpeg62-turbo), and goclip decode and
// preprocess every JPEG of checkTurboAgainstPIL identically. Skipped (failing under
// CI=true) without Debian's python3-pil.
func TestJPEGTurboMatchesDebianPIL(t *testing.T) {
	_, versions := checkTurboAgainstPIL(t, testutil.DebianPython(t, "PIL"))
	if want := "libjpeg-turbo " + jpegturbo.Version; jpegturbo.Version == "" || !strings.HasSuffix(versions, want) {
		t.Errorf("Debian's PIL says %q; goclip links libjpeg-turbo %q: not the same library", versions, jpegturbo.Version)
	}
}
