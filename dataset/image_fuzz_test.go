package dataset

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"testing"
)

// FuzzDecodeImage feeds arbitrary bytes to the image decoder: it returns an image of
// the size its header says, within the pixel limit, or an error; it never panics.
// Seeds: PNGs of every colour mode and JPEGs (colour and grey) made here.
func FuzzDecodeImage(f *testing.F) {
	const limit = 1 << 16
	rect := image.Rect(0, 0, 7, 5)
	fill := func(m interface{ Set(x, y int, c color.Color) }) {
		for y := range 5 {
			for x := range 7 {
				m.Set(x, y, color.NRGBA{uint8(37 * x), uint8(51 * y), uint8(x * y), uint8(200 + x)})
			}
		}
	}
	gray, gray16, rgba, nrgba64 := image.NewGray(rect), image.NewGray16(rect), image.NewRGBA(rect), image.NewNRGBA64(rect)
	pal := image.NewPaletted(rect, color.Palette{color.Black, color.White, color.NRGBA{255, 0, 0, 128}})
	for _, m := range []interface {
		image.Image
		Set(x, y int, c color.Color)
	}{gray, gray16, rgba, nrgba64, pal} {
		fill(m)
		var b bytes.Buffer
		if err := png.Encode(&b, m); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes())
	}
	for _, m := range []image.Image{rgba, gray} {
		var b bytes.Buffer
		if err := jpeg.Encode(&b, m, &jpeg.Options{Quality: 90}); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes())
	}
	f.Add([]byte("\x89PNG\r\n\x1a\n"))
	f.Add([]byte{0xff, 0xd8, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		img, err := DecodeImage(data, "fuzz", limit)
		if err != nil {
			return
		}
		if img.W <= 0 || img.H <= 0 || img.W*img.H > limit || len(img.Pix) != 3*img.W*img.H {
			t.Fatalf("decoded %dx%d with %d bytes", img.W, img.H, len(img.Pix))
		}
	})
}
