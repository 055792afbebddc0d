package dataset

import "image"

// webpYCbCrToRGB converts a lossy WebP's decoded planes (VP8's limited-range BT.601
// YUV, 4:2:0) to RGB as libwebp does by default, and so as PIL does: "fancy"
// upsampling of the chroma (libwebp's UpsampleRgbLinePair: each output pixel mixes the
// four nearest chroma samples 9:3:3:1, with libwebp's integer rounding) and libwebp's
// integer VP8YuvToRgb. Go's color.YCbCrToRGB would treat the planes as full-range
// JPEG YCbCr.
func webpYCbCrToRGB(m *image.YCbCr, out RGB) {
	w, h := out.W, out.H
	b := m.Rect
	cw := (w + 1) / 2
	ch := (h + 1) / 2
	crow := func(plane []uint8, k int) []uint8 { // chroma row k
		k = min(max(k, 0), ch-1)
		o := (k+b.Min.Y/2)*m.CStride + b.Min.X/2
		return plane[o : o+cw]
	}
	u := make([]int32, w)
	v := make([]int32, w)
	for y := 0; y < h; y++ {
		// near: the chroma row of this pixel row; far: the one above (even rows) or
		// below (odd rows), clamped at the edges.
		var near, far int
		if y%2 == 1 {
			near, far = (y-1)/2, (y+1)/2
		} else {
			near, far = y/2, y/2-1
		}
		upsampleLine(crow(m.Cb, near), crow(m.Cb, far), u)
		upsampleLine(crow(m.Cr, near), crow(m.Cr, far), v)
		yo := (y+b.Min.Y)*m.YStride + b.Min.X
		yr := m.Y[yo : yo+w]
		o := out.Pix[3*w*y : 3*w*(y+1)]
		for x := 0; x < w; x++ {
			yy := mulHi(int32(yr[x]), 19077)
			o[3*x] = clip8(yy + mulHi(v[x], 26149) - 14234)
			o[3*x+1] = clip8(yy - mulHi(u[x], 6419) - mulHi(v[x], 13320) + 8708)
			o[3*x+2] = clip8(yy + mulHi(u[x], 33050) - 17685)
		}
	}
}

// upsampleLine is libwebp's horizontal-and-vertical chroma interpolation for one
// output row: n is the nearer chroma row, f the farther one.
func upsampleLine(n, f []uint8, dst []int32) {
	w := len(dst)
	dst[0] = (3*int32(n[0]) + int32(f[0]) + 2) >> 2
	last := (w - 1) >> 1
	for j := 1; j <= last; j++ {
		n0, n1, f0, f1 := int32(n[j-1]), int32(n[j]), int32(f[j-1]), int32(f[j])
		avg := n0 + n1 + f0 + f1 + 8
		dst[2*j-1] = (((avg + 2*(n1+f0)) >> 3) + n0) >> 1
		dst[2*j] = (((avg + 2*(n0+f1)) >> 3) + n1) >> 1
	}
	if w%2 == 0 && w > 1 {
		dst[w-1] = (3*int32(n[last]) + int32(f[last]) + 2) >> 2
	}
}

func mulHi(v, c int32) int32 { return (v * c) >> 8 }

// clip8 is libwebp's VP8Clip8: a 14-bit fixed-point value (6 fractional bits) to 8 bits.
func clip8(v int32) uint8 {
	if v&^16383 == 0 {
		return uint8(v >> 6)
	}
	if v < 0 {
		return 0
	}
	return 255
}
