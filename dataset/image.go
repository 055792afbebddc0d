package dataset

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"os"

	"golang.org/x/image/bmp"

	"goclip/internal/jpegturbo"
	"golang.org/x/image/webp"
)

// RGB is an 8-bit RGB image: W*H pixels, rows top to bottom, channels interleaved
// (HWC), len(Pix) == 3*W*H. It is what PIL's Image.convert("RGB") holds.
type RGB struct {
	W, H int
	Pix  []uint8
}

// NewRGB returns a black w x h image.
func NewRGB(w, h int) RGB { return RGB{W: w, H: h, Pix: make([]uint8, 3*w*h)} }

// DefaultMaxPixels is the pixel limit ReadImage applies when given 0: larger images
// (decompression bombs) are rejected from their header, before any decoding.
const DefaultMaxPixels = 100_000_000

// ErrTooManyPixels is wrapped by the error for an image over the pixel limit.
var ErrTooManyPixels = errors.New("image exceeds the pixel limit")

// ImageError is the error of every image read: it names the file.
type ImageError struct {
	Path string
	Err  error
}

func (e *ImageError) Error() string { return fmt.Sprintf("image %s: %v", e.Path, e.Err) }
func (e *ImageError) Unwrap() error { return e.Err }

// ReadImage reads a JPEG, PNG, WebP, GIF or BMP file into RGB exactly as PIL's
// Image.open(path).convert("RGB") does (see DecodeImage). maxPixels <= 0 means
// DefaultMaxPixels. Errors are *ImageError values naming path.
func ReadImage(path string, maxPixels int) (RGB, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return RGB{}, &ImageError{path, err}
	}
	return DecodeImage(data, path, maxPixels)
}

// DecodeImage decodes a JPEG, PNG, WebP, GIF (its first frame) or BMP held in data;
// name is used in errors only.
//
// The conversion to RGB follows PIL's convert("RGB"): grey is replicated, alpha is
// dropped without compositing, palettes are looked up, 16-bit PNG samples keep their
// high byte, except 16-bit greyscale, which PIL opens as 32-bit integers ("I") and
// clips to 255 on conversion. JPEG chroma is upsampled with libjpeg's "fancy"
// (triangular) filter and converted with libjpeg's integer YCbCr->RGB tables, so the
// result differs from PIL's only where Go's IDCT rounds differently from libjpeg's
// (a level or so on a few pixels); built with -tags jpegturbo (as make build builds
// goclip where libjpeg-turbo is installed), JPEGs are decoded by libjpeg-turbo as PIL
// decodes them, exactly (package jpegturbo). Lossy WebP is
// converted as libwebp converts it (webpYCbCrToRGB), lossless WebP and BMP exactly;
// a GIF's transparent palette entry comes out black where PIL keeps its colour (Go's
// decoder drops it). The pixel limit (maxPixels <= 0: DefaultMaxPixels) is checked
// from the header before decoding.
func DecodeImage(data []byte, name string, maxPixels int) (RGB, error) {
	fail := func(err error) (RGB, error) { return RGB{}, &ImageError{name, err} }
	if maxPixels <= 0 {
		maxPixels = DefaultMaxPixels
	}
	if len(data) == 0 {
		return fail(errors.New("empty file"))
	}
	var (
		decodeConfig func(io.Reader) (image.Config, error)
		decode       func(io.Reader) (image.Image, error)
		format       string
	)
	switch {
	case bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")):
		format, decodeConfig, decode = "png", png.DecodeConfig, png.Decode
	case bytes.HasPrefix(data, []byte{0xff, 0xd8}):
		format, decodeConfig, decode = "jpeg", jpeg.DecodeConfig, jpeg.Decode
	case len(data) >= 12 && string(data[:4]) == "RIFF" && string(data[8:12]) == "WEBP":
		format, decodeConfig, decode = "webp", webp.DecodeConfig, webp.Decode
	case bytes.HasPrefix(data, []byte("GIF87a")) || bytes.HasPrefix(data, []byte("GIF89a")):
		format, decodeConfig, decode = "gif", gif.DecodeConfig, gif.Decode // the first frame
	case bytes.HasPrefix(data, []byte("BM")):
		format, decodeConfig, decode = "bmp", bmp.DecodeConfig, bmp.Decode
	default:
		return fail(errors.New("not a JPEG, PNG, WebP, GIF or BMP file"))
	}
	cfg, err := decodeConfig(bytes.NewReader(data))
	if err != nil {
		return fail(fmt.Errorf("bad header: %w", err))
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return fail(fmt.Errorf("bad size %dx%d", cfg.Width, cfg.Height))
	}
	if int64(cfg.Width)*int64(cfg.Height) > int64(maxPixels) {
		return fail(fmt.Errorf("%w: %dx%d is over %d pixels", ErrTooManyPixels, cfg.Width, cfg.Height, maxPixels))
	}
	if format == "jpeg" && jpegturbo.Available {
		// libjpeg-turbo as PIL runs it; what it refuses (CMYK, damage) goes to Go's
		// decoder, which decodes it or names the problem.
		if w, h, pix, err := jpegturbo.Decode(data, maxPixels); err == nil {
			return RGB{W: w, H: h, Pix: pix}, nil
		}
	}
	m, err := decode(bytes.NewReader(data))
	if err != nil {
		return fail(fmt.Errorf("decode (truncated or corrupt file?): %w", err))
	}
	if format == "webp" { // lossy WebP: libwebp's YUV conversion, alpha dropped
		var y *image.YCbCr
		switch m := m.(type) {
		case *image.YCbCr:
			y = m
		case *image.NYCbCrA:
			y = &m.YCbCr
		}
		if y != nil && y.SubsampleRatio == image.YCbCrSubsampleRatio420 {
			out := NewRGB(y.Rect.Dx(), y.Rect.Dy())
			webpYCbCrToRGB(y, out)
			return out, nil
		}
	}
	img, err := toRGB(m, format == "png" && pngGrey16(data))
	if err != nil {
		return fail(err)
	}
	return img, nil
}

// JPEGDecoder names the JPEG decoder of this build, for goclip version: libjpeg-turbo
// (built with -tags jpegturbo, as make build does where the library is installed) or
// Go's image/jpeg (the fallback).
func JPEGDecoder() string {
	if jpegturbo.Available {
		return "libjpeg-turbo " + jpegturbo.Version + ", statically linked"
	}
	return "Go image/jpeg (built without -tags jpegturbo: slower, a level off PIL on some pixels; make build uses libjpeg-turbo where it is installed)"
}

// pngGrey16 reports whether a PNG's IHDR says 16-bit greyscale without alpha
// (colour type 0), the one 16-bit layout PIL converts by clipping, not by taking
// the high byte. Go decodes it with a tRNS chunk as NRGBA64, hence the sniffing.
func pngGrey16(data []byte) bool {
	// signature(8) length(4) "IHDR"(4) width(4) height(4) depth(1) colour type(1)
	if len(data) < 26 || string(data[12:16]) != "IHDR" {
		return false
	}
	return data[24] == 16 && data[25] == 0
}

// toRGB converts a decoded image to RGB the way PIL's convert("RGB") does.
func toRGB(m image.Image, grey16 bool) (RGB, error) {
	b := m.Bounds()
	w, h := b.Dx(), b.Dy()
	out := NewRGB(w, h)
	p := out.Pix
	switch m := m.(type) {
	case *image.YCbCr:
		jpegYCbCrToRGB(m, out)
	case *image.Gray:
		for y := 0; y < h; y++ {
			row := m.Pix[(y)*m.Stride : y*m.Stride+w]
			o := p[3*w*y : 3*w*(y+1)]
			for x, v := range row {
				o[3*x], o[3*x+1], o[3*x+2] = v, v, v
			}
		}
	case *image.RGBA: // opaque 8-bit truecolour PNG, or an RGB-coded JPEG
		copyRGB4(p, m.Pix, m.Stride, w, h)
	case *image.NRGBA: // PNG with alpha: PIL drops it without compositing
		copyRGB4(p, m.Pix, m.Stride, w, h)
	case *image.Gray16:
		for y := 0; y < h; y++ {
			o := p[3*w*y : 3*w*(y+1)]
			for x := 0; x < w; x++ {
				v := clipGrey16(m.Pix[y*m.Stride+2*x], m.Pix[y*m.Stride+2*x+1])
				o[3*x], o[3*x+1], o[3*x+2] = v, v, v
			}
		}
	case *image.RGBA64:
		copyRGB16(p, m.Pix, m.Stride, w, h, false)
	case *image.NRGBA64:
		copyRGB16(p, m.Pix, m.Stride, w, h, grey16)
	case *image.Paletted:
		var pal [256][3]uint8
		for i, c := range m.Palette {
			if i == 256 {
				break
			}
			switch c := c.(type) {
			case color.NRGBA: // PNG palette with tRNS: the colour, alpha dropped
				pal[i] = [3]uint8{c.R, c.G, c.B}
			default:
				n := color.NRGBAModel.Convert(c).(color.NRGBA)
				pal[i] = [3]uint8{n.R, n.G, n.B}
			}
		}
		for y := 0; y < h; y++ {
			o := p[3*w*y : 3*w*(y+1)]
			for x, v := range m.Pix[y*m.Stride : y*m.Stride+w] {
				c := pal[v]
				o[3*x], o[3*x+1], o[3*x+2] = c[0], c[1], c[2]
			}
		}
	case *image.CMYK:
		// PIL's cmyk2rgb: nk = 255-k; channel = clip(nk - c*nk/255), with its
		// MULDIV255 rounding.
		for y := 0; y < h; y++ {
			o := p[3*w*y : 3*w*(y+1)]
			row := m.Pix[y*m.Stride : y*m.Stride+4*w]
			for x := 0; x < w; x++ {
				nk := 255 - int(row[4*x+3])
				for c := 0; c < 3; c++ {
					t := int(row[4*x+c])*nk + 128
					o[3*x+c] = clip255(nk - ((t>>8)+t)>>8)
				}
			}
		}
	default:
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				n := color.NRGBAModel.Convert(m.At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA)
				i := 3 * (y*w + x)
				p[i], p[i+1], p[i+2] = n.R, n.G, n.B
			}
		}
	}
	return out, nil
}

func copyRGB4(dst, src []uint8, stride, w, h int) {
	for y := 0; y < h; y++ {
		s := src[y*stride : y*stride+4*w]
		d := dst[3*w*y : 3*w*(y+1)]
		for x := 0; x < w; x++ {
			d[3*x], d[3*x+1], d[3*x+2] = s[4*x], s[4*x+1], s[4*x+2]
		}
	}
}

// copyRGB16 keeps the high byte of each 16-bit sample (PIL's "RGB;16B" unpacking),
// or clips grey values to 255 when grey16 (PIL's "I" -> "RGB").
func copyRGB16(dst, src []uint8, stride, w, h int, grey16 bool) {
	for y := 0; y < h; y++ {
		s := src[y*stride : y*stride+8*w]
		d := dst[3*w*y : 3*w*(y+1)]
		for x := 0; x < w; x++ {
			if grey16 {
				v := clipGrey16(s[8*x], s[8*x+1])
				d[3*x], d[3*x+1], d[3*x+2] = v, v, v
				continue
			}
			d[3*x], d[3*x+1], d[3*x+2] = s[8*x], s[8*x+2], s[8*x+4]
		}
	}
}

// clipGrey16 is PIL's i2rgb on a big-endian 16-bit sample: values over 255 clip.
func clipGrey16(hi, lo uint8) uint8 {
	if hi != 0 {
		return 255
	}
	return lo
}

func clip255(v int) uint8 {
	if v < 0 {
		return 0
	}
	if v > 255 {
		return 255
	}
	return uint8(v)
}
