// Package jpegturbo decodes JPEG images with libjpeg-turbo (Debian's
// libjpeg62-turbo-dev, Ubuntu's libjpeg-turbo8-dev), the library PIL decodes JPEGs
// with, using PIL's settings (JDCT_ISLOW, fancy upsampling, RGB output), so that a JPEG
// decodes bit for bit as PIL decodes it; Go's image/jpeg differs from it by a level on
// some pixels (its IDCT rounds differently) and is several times slower.
//
// It is goclip's second cgo package (after package torch) because no pure-Go decoder
// reproduces libjpeg's IDCT bit for bit at its speed. It is built only with the build
// tag jpegturbo (go build -tags jpegturbo), so that goclip builds where the library is
// missing; without the tag Available is false and package dataset decodes with Go's
// image/jpeg. The Makefile adds the tag when third_party/find-jpegturbo.sh finds the
// library (third_party/apt.sh installs it). libjpeg.a is linked statically, so a
// goclip binary runs where libjpeg-turbo is not installed (the GPU machine, the CUDA
// image's runtime stage) and always with the version it was tested with.
package jpegturbo

import "errors"

// ErrUnavailable is returned by Decode in a build without libjpeg-turbo.
var ErrUnavailable = errors.New("jpegturbo: built without libjpeg-turbo (build with -tags jpegturbo)")
