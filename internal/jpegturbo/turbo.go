//go:build jpegturbo && cgo

package jpegturbo

/*
#cgo LDFLAGS: -l:libjpeg.a
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <jpeglib.h>
#include <jerror.h>

typedef struct {
	struct jpeg_error_mgr pub;
	jmp_buf jmp;
	char msg[JMSG_LENGTH_MAX];
	int truncated;
} gc_err;

static void gc_error_exit(j_common_ptr c) {
	gc_err *e = (gc_err *)c->err;
	(*c->err->format_message)(c, e->msg);
	longjmp(e->jmp, 1);
}

static void gc_emit(j_common_ptr c, int level) {
	// Warnings (level < 0: corrupt data that libjpeg recovers from) are ignored, as
	// PIL ignores them, except the data ending early, for which PIL fails ("image
	// file is truncated"); trace messages are ignored too.
	gc_err *e = (gc_err *)c->err;
	if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF) {
		e->truncated = 1;
	}
}

// gc_header reads the size; returns 0, or 1 with msg set.
static int gc_header(const unsigned char *data, unsigned long n, int *w, int *h, char *msg) {
	struct jpeg_decompress_struct d;
	gc_err e;
	d.err = jpeg_std_error(&e.pub);
	e.pub.error_exit = gc_error_exit;
	e.pub.emit_message = gc_emit;
	e.truncated = 0;
	if (setjmp(e.jmp)) {
		strncpy(msg, e.msg, JMSG_LENGTH_MAX);
		jpeg_destroy_decompress(&d);
		return 1;
	}
	jpeg_create_decompress(&d);
	jpeg_mem_src(&d, data, n);
	jpeg_read_header(&d, TRUE);
	*w = d.image_width;
	*h = d.image_height;
	jpeg_destroy_decompress(&d);
	return 0;
}

// gc_decode decodes into out (w*h*3 bytes) as RGB with PIL's settings.
static int gc_decode(const unsigned char *data, unsigned long n, unsigned char *out, int w, int h, char *msg) {
	struct jpeg_decompress_struct d;
	gc_err e;
	d.err = jpeg_std_error(&e.pub);
	e.pub.error_exit = gc_error_exit;
	e.pub.emit_message = gc_emit;
	e.truncated = 0;
	if (setjmp(e.jmp)) {
		strncpy(msg, e.msg, JMSG_LENGTH_MAX);
		jpeg_destroy_decompress(&d);
		return 1;
	}
	jpeg_create_decompress(&d);
	jpeg_mem_src(&d, data, n);
	jpeg_read_header(&d, TRUE);
	if ((int)d.image_width != w || (int)d.image_height != h) {
		strcpy(msg, "size changed between reads");
		jpeg_destroy_decompress(&d);
		return 1;
	}
	d.out_color_space = JCS_RGB;
	d.dct_method = JDCT_ISLOW;
	d.do_fancy_upsampling = TRUE;
	jpeg_start_decompress(&d);
	while (d.output_scanline < d.output_height) {
		JSAMPROW row = out + (size_t)d.output_scanline * w * 3;
		jpeg_read_scanlines(&d, &row, 1);
	}
	jpeg_finish_decompress(&d);
	jpeg_destroy_decompress(&d);
	if (e.truncated) {
		strcpy(msg, "the data ends before the image does");
		return 1;
	}
	return 0;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"unsafe"
)

// Available reports whether this build decodes with libjpeg-turbo.
const Available = true

// Version is the version of the libjpeg-turbo this build links (statically), from its
// jconfig.h, e.g. "2.1.5".
var Version = func() string {
	v := int(C.LIBJPEG_TURBO_VERSION_NUMBER) // major*1000000 + minor*1000 + patch
	return fmt.Sprintf("%d.%d.%d", v/1000000, v/1000%1000, v%1000)
}()

// Decode decodes a JPEG to RGB (HWC) as PIL's Image.open(f).convert("RGB") does for
// greyscale and YCbCr JPEGs. Images over maxPixels are refused from their header.
// CMYK JPEGs are refused (package dataset decodes those with Go).
func Decode(data []byte, maxPixels int) (w, h int, rgb []uint8, err error) {
	if len(data) == 0 {
		return 0, 0, nil, errors.New("empty file")
	}
	var msg [C.JMSG_LENGTH_MAX]C.char
	p := (*C.uchar)(unsafe.Pointer(&data[0]))
	var cw, ch C.int
	if C.gc_header(p, C.ulong(len(data)), &cw, &ch, &msg[0]) != 0 {
		return 0, 0, nil, fmt.Errorf("bad header: %s", C.GoString(&msg[0]))
	}
	w, h = int(cw), int(ch)
	if w <= 0 || h <= 0 {
		return 0, 0, nil, fmt.Errorf("bad size %dx%d", w, h)
	}
	if int64(w)*int64(h) > int64(maxPixels) {
		return w, h, nil, fmt.Errorf("%dx%d is over %d pixels", w, h, maxPixels)
	}
	rgb = make([]uint8, 3*w*h)
	if C.gc_decode(p, C.ulong(len(data)), (*C.uchar)(unsafe.Pointer(&rgb[0])), cw, ch, &msg[0]) != 0 {
		return 0, 0, nil, fmt.Errorf("decode (truncated or corrupt file?): %s", C.GoString(&msg[0]))
	}
	return w, h, rgb, nil
}
