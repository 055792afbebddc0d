package dataset

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"goclip/internal/testutil"
)

func TestImageDecodeFixtures(t *testing.T) {
	dir := testutil.Fixtures(t, "images")
	cases := map[string][2]int{
		"astronaut.png": {512, 512}, "camera.png": {512, 512}, "logo.png": {500, 500},
		"horse.png": {400, 328}, "rocket.jpg": {640, 427}, "chelsea.png": {451, 300},
	}
	for name, size := range cases {
		img, err := ReadImage(filepath.Join(dir, name), 0)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if img.W != size[0] || img.H != size[1] || len(img.Pix) != 3*img.W*img.H {
			t.Errorf("%s: got %dx%d (%d bytes), want %dx%d", name, img.W, img.H, len(img.Pix), size[0], size[1])
		}
	}
	// Greyscale expands to three equal channels.
	img, _ := ReadImage(filepath.Join(dir, "camera.png"), 0)
	for i := 0; i < len(img.Pix); i += 3 {
		if img.Pix[i] != img.Pix[i+1] || img.Pix[i] != img.Pix[i+2] {
			t.Fatalf("camera.png: pixel %d not grey: %v", i/3, img.Pix[i:i+3])
		}
	}
}

func TestImageTruncated(t *testing.T) {
	path := testutil.Fixtures(t, "images", "truncated.jpg")
	_, err := ReadImage(path, 0)
	if err == nil {
		t.Fatal("truncated.jpg decoded without error")
	}
	var ie *ImageError
	if !errors.As(err, &ie) || ie.Path != path || !strings.Contains(err.Error(), "truncated.jpg") {
		t.Fatalf("error does not name the file: %v", err)
	}
	t.Log(err)
}

func TestImageZeroByteAndGarbage(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.jpg")
	garbage := filepath.Join(dir, "garbage.png")
	os.WriteFile(empty, nil, 0o644)
	os.WriteFile(garbage, []byte("this is not an image at all"), 0o644)
	for _, p := range []string{empty, garbage, filepath.Join(dir, "missing.jpg")} {
		_, err := ReadImage(p, 0)
		if err == nil || !strings.Contains(err.Error(), filepath.Base(p)) {
			t.Errorf("%s: got %v, want an error naming the file", p, err)
		}
	}
}

func TestImagePixelLimit(t *testing.T) {
	var buf bytes.Buffer
	png.Encode(&buf, image.NewGray(image.Rect(0, 0, 200, 100)))
	if _, err := DecodeImage(buf.Bytes(), "big.png", 20_000); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	_, err := DecodeImage(buf.Bytes(), "big.png", 19_999)
	if !errors.Is(err, ErrTooManyPixels) || !strings.Contains(err.Error(), "big.png") {
		t.Fatalf("over the limit: got %v", err)
	}
	// A header claiming a huge image is rejected before any pixel is decoded.
	hdr := buf.Bytes()[:33:33]
	huge := append([]byte(nil), hdr...)
	copy(huge[16:24], []byte{0, 1, 0, 0, 0, 1, 0, 0}) // 65536 x 65536
	binary.BigEndian.PutUint32(huge[29:33], crc32.ChecksumIEEE(huge[12:29]))
	if _, err := DecodeImage(huge, "bomb.png", 0); !errors.Is(err, ErrTooManyPixels) {
		t.Fatalf("bomb: got %v", err)
	}
}

// TestImagePNGModes checks PIL's convert("RGB") rules on the PNG layouts Go decodes
// to different image types.
func TestImagePNGModes(t *testing.T) {
	enc := func(m image.Image) []byte {
		var b bytes.Buffer
		if err := png.Encode(&b, m); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	check := func(name string, data []byte, want [3]uint8) {
		t.Helper()
		img, err := DecodeImage(data, name, 0)
		if err != nil {
			t.Fatal(err)
		}
		if got := [3]uint8(img.Pix[:3]); got != want {
			t.Errorf("%s: got %v, want %v", name, got, want)
		}
	}
	nrgba := image.NewNRGBA(image.Rect(0, 0, 1, 1))
	nrgba.Pix = []uint8{200, 100, 50, 0} // fully transparent: PIL keeps the colour
	check("rgba", enc(nrgba), [3]uint8{200, 100, 50})
	pal := image.NewPaletted(image.Rect(0, 0, 1, 1), color.Palette{color.NRGBA{10, 20, 30, 40}})
	check("palette", enc(pal), [3]uint8{10, 20, 30})
	g16 := image.NewGray16(image.Rect(0, 0, 2, 1))
	g16.SetGray16(0, 0, color.Gray16{Y: 200})
	g16.SetGray16(1, 0, color.Gray16{Y: 0x1234})
	img, _ := DecodeImage(enc(g16), "grey16", 0)
	if img.Pix[0] != 200 || img.Pix[3] != 255 { // PIL: mode "I", clipped to 255
		t.Errorf("grey16: got %v, want [200 .. 255 ..]", img.Pix)
	}
	rgb16 := image.NewRGBA64(image.Rect(0, 0, 1, 1))
	rgb16.SetRGBA64(0, 0, color.RGBA64{0x1234, 0xabcd, 0x00ff, 0xffff})
	check("rgb16", enc(rgb16), [3]uint8{0x12, 0xab, 0x00}) // high bytes
}

// TestImageJPEGColourPath checks libjpeg's colour tables and that the triangle
// upsamplers keep flat chroma flat. (Against PIL itself, on JPEGs with flat 16x16
// blocks, where the IDCT is exact, the 4:4:4, 4:2:2 and 4:2:0 decodes were verified
// bit-identical during development; on other JPEGs the remaining differences come from
// Go's IDCT and are covered by the rocket.jpg tolerances.)
func TestImageJPEGColourPath(t *testing.T) {
	// libjpeg's tables at the extremes (from jdcolor.c's formulas).
	if crR[0] != -179 || crR[255] != 178 || cbB[0] != -227 || cbB[255] != 225 {
		t.Fatalf("colour tables: crR %d %d cbB %d %d", crR[0], crR[255], cbB[0], cbB[255])
	}
	in := []uint8{77, 77, 77, 77, 77}
	out := make([]uint8, 10)
	fancyH2V1(in, out)
	sum := []int32{308, 308, 308, 308, 308}
	out2 := make([]uint8, 10)
	fancyH2V2(sum, out2)
	for i := range out {
		if out[i] != 77 || out2[i] != 77 {
			t.Fatalf("flat upsampling changed values: %v %v", out, out2)
		}
	}
	// A step 0 -> 100 gets libjpeg's 3/4-1/4 ramp with its rounding.
	fancyH2V1([]uint8{0, 0, 100, 100}, out[:8])
	if want := []uint8{0, 0, 0, 25, 75, 100, 100, 100}; string(out[:8]) != string(want) {
		t.Fatalf("h2v1 step: got %v want %v", out[:8], want)
	}
}
