//go:build !(jpegturbo && cgo)

package jpegturbo

// Available reports whether this build decodes with libjpeg-turbo.
const Available = false

// Version is empty in this build.
var Version = ""

// Decode is unavailable in this build.
func Decode(data []byte, maxPixels int) (w, h int, rgb []uint8, err error) {
	return 0, 0, nil, ErrUnavailable
}
