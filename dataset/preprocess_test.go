package dataset

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"goclip/internal/testutil"
)

func diffStats(got, want []float32) (maxAbs, meanAbs float64) {
	var sum float64
	for i := range got {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		sum += d
		maxAbs = max(maxAbs, d)
	}
	return maxAbs, sum / float64(len(got))
}

// TestPreprocessFixtures reproduces every preprocess/<image>.npy (3,224,224) made by
// transformers' CLIPImageProcessor with PIL.
func TestPreprocessFixtures(t *testing.T) {
	fx := testutil.Fixtures(t)
	files, _ := filepath.Glob(filepath.Join(fx, "clip-tiny-openai", "preprocess", "*.npy"))
	if len(files) == 0 {
		t.Fatal("no preprocess fixtures")
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".npy")
		src := filepath.Join(fx, "images", name+".png")
		jpeg := false
		if _, err := os.Stat(src); err != nil {
			src, jpeg = filepath.Join(fx, "images", name+".jpg"), true
		}
		shape, want := testutil.ReadNpyFloat32(t, f)
		if len(shape) != 3 || shape[0] != 3 || shape[1] != 224 || shape[2] != 224 {
			t.Fatalf("%s: shape %v", f, shape)
		}
		img, err := ReadImage(src, 0)
		if err != nil {
			t.Fatal(err)
		}
		got := Preprocess(img, 224)
		mx, mean := diffStats(got, want)
		t.Logf("%-20s max abs %.3g  mean abs %.3g", filepath.Base(src), mx, mean)
		if jpeg {
			if mx > 0.05 || mean > 0.005 {
				t.Errorf("%s: max %g (limit 0.05), mean %g (limit 0.005)", src, mx, mean)
			}
		} else if mx > 1e-5 {
			t.Errorf("%s: max abs error %g > 1e-5", src, mx)
		}
	}
}

// TestPreprocessPixelValues reproduces pixel_values.npy (8,3,32,32) at size 32.
func TestPreprocessPixelValues(t *testing.T) {
	fx := testutil.Fixtures(t, "clip-tiny-openai")
	var inputs struct{ Images []string }
	raw, err := os.ReadFile(filepath.Join(fx, "inputs.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &inputs); err != nil {
		t.Fatal(err)
	}
	shape, want := testutil.ReadNpyFloat32(t, filepath.Join(fx, "pixel_values.npy"))
	if len(shape) != 4 || shape[0] != len(inputs.Images) || shape[2] != 32 {
		t.Fatalf("pixel_values shape %v for %d images", shape, len(inputs.Images))
	}
	n := 3 * 32 * 32
	for i, name := range inputs.Images {
		img, err := ReadImage(filepath.Join(fx, "..", "images", name), 0)
		if err != nil {
			t.Fatal(err)
		}
		mx, mean := diffStats(Preprocess(img, 32), want[i*n:(i+1)*n])
		t.Logf("%-20s @32 max abs %.3g  mean abs %.3g", name, mx, mean)
		limit := 1e-5
		if strings.HasSuffix(name, ".jpg") {
			limit = 0.05
		}
		if mx > limit || mean > 0.005 {
			t.Errorf("%s at 32: max %g, mean %g", name, mx, mean)
		}
	}
}

func TestPreprocessShortestSideSize(t *testing.T) {
	for _, c := range []struct{ w, h, s, ww, wh int }{
		{640, 427, 224, 335, 224}, {427, 640, 224, 224, 335}, {512, 512, 224, 224, 224},
		{451, 300, 224, 336, 224}, {741, 500, 32, 47, 32}, {1, 1000, 224, 224, 224000},
	} {
		w, h := ShortestSideSize(c.w, c.h, c.s)
		if w != c.ww || h != c.wh {
			t.Errorf("%dx%d @%d: got %dx%d want %dx%d", c.w, c.h, c.s, w, h, c.ww, c.wh)
		}
	}
}

func TestPreprocessCenterCropPads(t *testing.T) {
	img := NewRGB(3, 2)
	for i := range img.Pix {
		img.Pix[i] = 100
	}
	out := CenterCrop(img, 4)
	if out.W != 4 || out.H != 4 {
		t.Fatalf("size %dx%d", out.W, out.H)
	}
	// transformers: pad top ceil((4-2)/2)=1, left ceil((4-3)/2)=1.
	for y := 0; y < 4; y++ {
		for x := 0; x < 4; x++ {
			v := out.Pix[3*(y*4+x)]
			in := y >= 1 && y < 3 && x >= 1 && x < 4
			if (v == 100) != in {
				t.Fatalf("pixel (%d,%d) = %d", x, y, v)
			}
		}
	}
}

func TestPreprocessResizeIdentity(t *testing.T) {
	img := NewRGB(5, 4)
	for i := range img.Pix {
		img.Pix[i] = uint8(i * 7)
	}
	out := Resize(img, 5, 4)
	for i := range out.Pix {
		if out.Pix[i] != img.Pix[i] {
			t.Fatal("identity resize changed pixels")
		}
	}
	// An identity-sized pass is skipped; the other still filters.
	if out := Resize(img, 5, 2); out.W != 5 || out.H != 2 {
		t.Fatalf("got %dx%d", out.W, out.H)
	}
}
