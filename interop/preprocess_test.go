package interop

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"goclip/dataset"
	"goclip/internal/jpegturbo"
	"goclip/internal/testutil"
)

// Bounds of the preprocessing comparisons, in normalised units (one uint8 level is
// 1/255/std, at most 0.01501 for CLIP's std).
const (
	// PNG against CLIPImageProcessorPil: the same uint8 pixels after the resize and
	// crop, then the same float32 arithmetic up to rounding.
	pngPilTol = 1e-6
	// Against CLIPImageProcessor (5.x's default, the torchvision backend): its bicubic
	// antialiasing filter rounds differently from PIL's, by at most one uint8 level.
	torchvisionLevels = 1
	// JPEG against PIL (libjpeg-turbo): built without libjpeg-turbo, goclip decodes
	// with Go's IDCT and libjpeg's colour conversion and upsampling; the measured worst
	// cases are stated in the log. Bounds: max and mean absolute difference in
	// normalised units. Built with it (make build where it is installed), goclip
	// decodes as PIL does and the bounds are pngPilTol.
	jpegMaxTol  = 0.05
	jpegMeanTol = 0.0015
)

// jpegBounds are the JPEG bounds of this build.
func jpegBounds() (maxTol, meanTol float64) {
	if jpegturbo.Available {
		return pngPilTol, pngPilTol
	}
	return jpegMaxTol, jpegMeanTol
}

var clipStd = [3]float64{0.26862954, 0.26130258, 0.27577711}
var clipMean = [3]float64{0.48145466, 0.4578275, 0.40821073}

// TestPreprocessMatchesCLIPImageProcessor: goclip's preprocessing (dataset.ReadImage and
// dataset.Preprocess, what embed, eval and training use) against transformers'
// CLIPImageProcessorPil and CLIPImageProcessor (torchvision) at 224 and at 40, on the
// fixture's PNGs (RGB, greyscale, RGBA; several aspect ratios) and on JPEGs (the
// fixture's rocket.jpg, and PIL-written variants: 4:4:4, 4:2:2, 4:2:0, progressive,
// greyscale, odd sizes).
func TestPreprocessMatchesCLIPImageProcessor(t *testing.T) {
	fx := testutil.Fixtures(t, "images")
	var pngs []string
	for _, n := range append(fixtureImages, "color.png") {
		pngs = append(pngs, filepath.Join(fx, n))
	}
	jpegSources := []string{filepath.Join(fx, "chelsea.png"), filepath.Join(fx, "coffee.png")}
	images := append(pngs, filepath.Join(fx, "rocket.jpg"))
	jpegDir := filepath.Join(t.TempDir(), "jpeg")
	for _, size := range []int{224, 40} {
		out := filepath.Join(t.TempDir(), "ref")
		args := []string{"preprocess", "--images", strings.Join(images, ","), "--size", fmt.Sprint(size), "--out", out}
		if size == 224 {
			args = append(args, "--make-jpegs", jpegDir, "--jpeg-sources", strings.Join(jpegSources, ","))
		} else {
			jpegs, _ := filepath.Glob(filepath.Join(jpegDir, "*.jpg"))
			args[2] = strings.Join(append(images, jpegs...), ",")
		}
		python(t, []string{"transformers", "torchvision", "numpy", "PIL"}, args...)
		raw, err := os.ReadFile(filepath.Join(out, "images.json"))
		if err != nil {
			t.Fatal(err)
		}
		var paths []string
		if err := json.Unmarshal(raw, &paths); err != nil {
			t.Fatal(err)
		}
		if len(paths) < len(images)+10 {
			t.Fatalf("%d images preprocessed, want the %d given and the JPEG variants", len(paths), len(images))
		}
		var worstJPEGMax, worstJPEGMean, worstTV float64
		var tvOff, tvTotal int
		for i, p := range paths {
			img, err := dataset.ReadImage(p, 0)
			if err != nil {
				t.Fatal(err)
			}
			got := dataset.Preprocess(img, size)
			_, pil := testutil.ReadNpyFloat32(t, filepath.Join(out, fmt.Sprintf("%d_pil.npy", i)))
			_, tv := testutil.ReadNpyFloat32(t, filepath.Join(out, fmt.Sprintf("%d_torchvision.npy", i)))
			if len(pil) != len(got) || len(tv) != len(got) {
				t.Fatalf("%s @%d: %d values, references %d and %d", p, size, len(got), len(pil), len(tv))
			}
			name := fmt.Sprintf("%s @%d", filepath.Base(p), size)
			mx, mean := absDiff(got, pil)
			if strings.HasSuffix(p, ".png") {
				// The uint8 stage is identical: PIL's pixels are recovered from its floats
				// (each within 1e-3 of a level) and compared with ResizeCropUint8.
				levels := levelsOf(t, name, pil, size)
				u8 := dataset.ResizeCropUint8(img, size)
				var off int
				for j := range levels {
					c, y, x := j/(size*size), (j/size)%size, j%size
					if u8.Pix[(y*size+x)*3+c] != levels[j] {
						off++
					}
				}
				t.Logf("%-28s PIL: %d of %d uint8 values differ, max abs %.3g", name, off, len(levels), mx)
				if off > 0 || mx > pngPilTol {
					t.Errorf("%s: against CLIPImageProcessorPil %d uint8 values differ, max abs %.3g (want 0 and <= %.0e)", name, off, mx, pngPilTol)
				}
			} else {
				t.Logf("%-28s PIL: max abs %.4f, mean abs %.5f", name, mx, mean)
				worstJPEGMax, worstJPEGMean = math.Max(worstJPEGMax, mx), math.Max(worstJPEGMean, mean)
				if maxTol, meanTol := jpegBounds(); mx > maxTol || mean > meanTol {
					t.Errorf("%s: against CLIPImageProcessorPil max abs %.4f (bound %g), mean %.5f (bound %g)", name, mx, maxTol, mean, meanTol)
				}
			}
			// torchvision: within one level of PIL's, so of goclip's on PNG.
			if strings.HasSuffix(p, ".png") {
				n := 0
				for j := range tv {
					c := j / (size * size)
					d := math.Abs(float64(tv[j])-float64(got[j])) * 255 * clipStd[c]
					worstTV = math.Max(worstTV, d)
					if d > 0.01 {
						n++
					}
				}
				tvOff += n
				tvTotal += len(tv)
			}
		}
		t.Logf("@%d: torchvision CLIPImageProcessor vs goclip on PNG: %d of %d values differ, by at most %.3f uint8 levels; JPEG vs PIL worst max %.4f, mean %.5f",
			size, tvOff, tvTotal, worstTV, worstJPEGMax, worstJPEGMean)
		if worstTV > torchvisionLevels+1e-3 {
			t.Errorf("@%d: torchvision CLIPImageProcessor differs from goclip by %.3f uint8 levels (bound %d)", size, worstTV, torchvisionLevels)
		}
	}
}

// levelsOf recovers the uint8 values behind CLIP-normalised pixels [3, S, S].
func levelsOf(t *testing.T, name string, v []float32, size int) []uint8 {
	t.Helper()
	out := make([]uint8, len(v))
	for j, x := range v {
		c := j / (size * size)
		l := (float64(x)*clipStd[c] + clipMean[c]) * 255
		r := math.Round(l)
		if math.Abs(l-r) > 1e-3 || r < 0 || r > 255 {
			t.Fatalf("%s: reference value %g is not a normalised uint8 level (%g)", name, x, l)
		}
		out[j] = uint8(r)
	}
	return out
}

// absDiff is the max and mean absolute difference.
func absDiff(a, b []float32) (mx, mean float64) {
	for i := range a {
		d := math.Abs(float64(a[i]) - float64(b[i]))
		mx = math.Max(mx, d)
		mean += d
	}
	return mx, mean / float64(len(a))
}
