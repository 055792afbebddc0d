package dataset

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"math/rand/v2"
	"testing"
)

// benchJPEG is a 500x375 quality-90 4:2:0 JPEG of smooth content with noise, the size
// and kind of image the data benchmark (bench/data) decodes.
func benchJPEG(b *testing.B) []byte {
	b.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	m := image.NewRGBA(image.Rect(0, 0, 500, 375))
	for y := 0; y < 375; y++ {
		for x := 0; x < 500; x++ {
			n := uint8(rng.IntN(24))
			m.SetRGBA(x, y, color.RGBA{uint8(x/2) + n, uint8(y*2/3) + n, uint8(x+y) / 2, 255})
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, m, &jpeg.Options{Quality: 90}); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// BenchmarkDecodeJPEG: DecodeImage of a 500x375 JPEG (libjpeg-turbo with -tags
// jpegturbo, else Go's image/jpeg path), one goroutine.
func BenchmarkDecodeJPEG(b *testing.B) {
	data := benchJPEG(b)
	b.ResetTimer()
	for range b.N {
		if _, err := DecodeImage(data, "bench.jpg", 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPreprocess224: Preprocess (resize of the short side to 224, centre crop,
// normalise) of the decoded 500x375 image, one goroutine.
func BenchmarkPreprocess224(b *testing.B) {
	img, err := DecodeImage(benchJPEG(b), "bench.jpg", 0)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		Preprocess(img, 224)
	}
}

// BenchmarkResizeCrop224: the uint8 stage of Preprocess alone.
func BenchmarkResizeCrop224(b *testing.B) {
	img, err := DecodeImage(benchJPEG(b), "bench.jpg", 0)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		ResizeCropUint8(img, 224)
	}
}
