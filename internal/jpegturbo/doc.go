// Package jpegturbo decodes JPEG images with libjpeg-turbo (Debian's
// libjpeg62-turbo-dev), the library PIL decodes JPEGs with, using PIL's settings
// (JDCT_ISLOW, fancy upsampling, RGB output), so that a JPEG decodes bit for bit as PIL
// decodes it; Go's image/jpeg differs from it by a level on some pixels (its IDCT
// rounds differently) and is slower.
//
// It is goclip's second cgo package (after package torch) because no pure-Go decoder
// reproduces libjpeg's IDCT bit for bit at its speed. It is built only with the build
// tag jpegturbo (go build -tags jpegturbo), so that goclip builds where the library is
// missing; without the tag Available is false and package dataset decodes with Go's
// image/jpeg.
package jpegturbo

import "errors"

// ErrUnavailable is returned by Decode in a build without libjpeg-turbo.
var ErrUnavailable = errors.New("jpegturbo: built without libjpeg-turbo (build with -tags jpegturbo)")
