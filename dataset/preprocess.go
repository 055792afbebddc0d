package dataset

import "math"

// CLIP preprocessing, as transformers' CLIPImageProcessor does it with PIL:
//
//  1. resize the shortest side to S with PIL's BICUBIC filter (ResizeShortest), the
//     long side becoming int(S*long/short);
//  2. centre crop S x S at top=(h-S)//2, left=(w-S)//2, zero padding an image smaller
//     than the crop (CenterCrop);
//  3. x/255, then (x-mean)/std per channel in float32, laid out CHW (Normalize).
//
// Steps 1-2 are ResizeCropUint8 (what the .npy cache stores); all three are Preprocess.
// With PNG input the result is bit-identical to transformers + PIL.

// CLIPMean and CLIPStd are the per-channel statistics CLIP normalises with.
var (
	CLIPMean = [3]float32{0.48145466, 0.4578275, 0.40821073}
	CLIPStd  = [3]float32{0.26862954, 0.26130258, 0.27577711}
)

// normLUT[c][v] is ((v/255) - mean[c]) / std[c], computed as transformers does: the
// rescale in float64 rounded to float32, then subtraction and division in float32.
var normLUT [3][256]float32

func init() {
	for c := 0; c < 3; c++ {
		m, s := CLIPMean[c], CLIPStd[c]
		for v := 0; v < 256; v++ {
			x := float32(float64(v) * (1.0 / 255))
			normLUT[c][v] = (x - m) / s
		}
	}
}

// Preprocess is CLIPImageProcessor at size S: ResizeCropUint8 then Normalize. It
// returns 3*S*S float32 values, CHW.
func Preprocess(img RGB, size int) []float32 {
	return Normalize(ResizeCropUint8(img, size), nil)
}

// ResizeCropUint8 resizes the shortest side to size and centre crops size x size: the
// uint8 stage of Preprocess, before normalisation.
func ResizeCropUint8(img RGB, size int) RGB {
	w, h := ShortestSideSize(img.W, img.H, size)
	top, left := floorDiv(h-size, 2), floorDiv(w-size, 2)
	if top < 0 || left < 0 || top+size > h || left+size > w {
		return CenterCrop(Resize(img, w, h), size) // needs padding
	}
	// Only the pixels the crop keeps are resampled (identical to resize-then-crop).
	return resizeWindow(img, [4]int{0, 0, img.W, img.H}, w, h, left, top, size, size)
}

// ShortestSideSize is transformers' get_resize_output_image_size with
// default_to_square=False: the short side becomes size, the long side
// int(size*long/short) (a float64 quotient truncated, as Python's int() does).
func ShortestSideSize(w, h, size int) (nw, nh int) {
	short, long := w, h
	if w > h {
		short, long = h, w
	}
	nl := int(float64(size*long) / float64(short))
	if w <= h {
		return size, nl
	}
	return nl, size
}

// ResizeShortest resizes img so that its shortest side is size (see ShortestSideSize),
// with PIL's bicubic filter.
func ResizeShortest(img RGB, size int) RGB {
	w, h := ShortestSideSize(img.W, img.H, size)
	return Resize(img, w, h)
}

// CenterCrop crops size x size from the centre, top=(h-size)//2, left=(w-size)//2
// (floor division), padding with zeros where img is smaller, as transformers'
// center_crop does.
func CenterCrop(img RGB, size int) RGB {
	return crop(img, size, size)
}

func crop(img RGB, cw, ch int) RGB {
	top, left := floorDiv(img.H-ch, 2), floorDiv(img.W-cw, 2)
	if top == 0 && left == 0 && img.W == cw && img.H == ch {
		return img
	}
	out := NewRGB(cw, ch)
	if top >= 0 && left >= 0 && top+ch <= img.H && left+cw <= img.W {
		for y := 0; y < ch; y++ {
			s := 3 * ((top+y)*img.W + left)
			copy(out.Pix[3*cw*y:3*cw*(y+1)], img.Pix[s:s+3*cw])
		}
		return out
	}
	// transformers pads the image into max(crop, size) centred with ceil((new-old)/2)
	// before the first row/column, shifts the crop window by that much and clips it.
	nh, nw := max(ch, img.H), max(cw, img.W)
	padT, padL := (nh-img.H+1)/2, (nw-img.W+1)/2
	top, left = top+padT, left+padL
	t0, t1 := max(0, top), min(nh, top+ch)
	l0, l1 := max(0, left), min(nw, left+cw)
	out = NewRGB(l1-l0, t1-t0)
	for y := t0; y < t1; y++ {
		sy := y - padT
		if sy < 0 || sy >= img.H {
			continue
		}
		for x := l0; x < l1; x++ {
			sx := x - padL
			if sx < 0 || sx >= img.W {
				continue
			}
			copy(out.Pix[3*((y-t0)*out.W+x-l0):][:3], img.Pix[3*(sy*img.W+sx):])
		}
	}
	return out
}

func floorDiv(a, b int) int {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// Normalize turns an RGB image (HWC uint8) into CLIP's normalised CHW float32,
// appending to dst[:0] when it has room. See NormalizeInto.
func Normalize(img RGB, dst []float32) []float32 {
	n := 3 * img.W * img.H
	if cap(dst) < n {
		dst = make([]float32, n)
	}
	dst = dst[:n]
	NormalizeInto(dst, img.Pix)
	return dst
}

// NormalizeInto writes the normalised CHW float32 form of pix (HWC uint8, 3 values a
// pixel) into dst (len(dst) == len(pix)): ((v/255)-mean[c])/std[c], exactly as
// transformers computes it.
func NormalizeInto(dst []float32, pix []uint8) {
	hw := len(pix) / 3
	r, g, b := dst[:hw], dst[hw:2*hw], dst[2*hw:3*hw]
	lr, lg, lb := &normLUT[0], &normLUT[1], &normLUT[2]
	for i := range r {
		p := pix[3*i : 3*i+3]
		r[i], g[i], b[i] = lr[p[0]], lg[p[1]], lb[p[2]]
	}
}

// NormalizeCHWInto is NormalizeInto for a CHW uint8 input.
func NormalizeCHWInto(dst []float32, chw []uint8) {
	hw := len(chw) / 3
	for c := 0; c < 3; c++ {
		lut := &normLUT[c]
		for i, v := range chw[c*hw : (c+1)*hw] {
			dst[c*hw+i] = lut[v]
		}
	}
}

// Resize resamples img to w x h with PIL's BICUBIC filter (Image.resize with
// reducing_gap=None), bit for bit.
func Resize(img RGB, w, h int) RGB {
	return ResizeBox(img, [4]int{0, 0, img.W, img.H}, w, h)
}

// ResizeBox resamples the region box = (left, top, right, bottom) of img to w x h, as
// PIL's Image.resize(size, BICUBIC, box=box) does: pixels outside the box still feed
// the filter's taps at the edges, as in PIL.
//
// PIL's ImagingResample: the filter support is 2 (a=-0.5) scaled by the downscale
// factor, each output's weights are normalised and turned into 22-bit fixed point, the
// horizontal pass runs first over the rows the vertical pass needs, its result is
// rounded and clipped to uint8, then the vertical pass. A pass whose size and box are
// the identity is skipped.
func ResizeBox(img RGB, box [4]int, w, h int) RGB {
	return resizeWindow(img, box, w, h, 0, 0, w, h)
}

// resizeWindow is ResizeBox computing only the output window of size cw x ch at
// (x0, y0) (inside the w x h result): each output pixel depends only on its own
// weights, so the window is bit-identical to cropping the full resize, for less work.
func resizeWindow(img RGB, box [4]int, w, h, x0, y0, cw, ch int) RGB {
	needH := w != img.W || box[0] != 0 || box[2] != img.W
	needV := h != img.H || box[1] != 0 || box[3] != img.H
	var kh, kv coeffs
	first, last := y0, y0+ch // source rows the vertical pass reads
	if needH {
		kh = bicubicCoeffs(img.W, float64(box[0]), float64(box[2]), w).window(x0, cw)
	}
	if needV {
		kv = bicubicCoeffs(img.H, float64(box[1]), float64(box[3]), h).window(y0, ch)
		first = kv.bounds[0]
		last = kv.bounds[2*(ch-1)] + kv.bounds[2*(ch-1)+1]
		for i := 0; i < ch; i++ {
			kv.bounds[2*i] -= first
		}
	}
	tmp := NewRGB(cw, last-first)
	if needH {
		resampleH(tmp, img, first, kh)
	} else {
		for y := range tmp.H {
			s := 3 * ((first+y)*img.W + x0)
			copy(tmp.Pix[3*cw*y:3*cw*(y+1)], img.Pix[s:s+3*cw])
		}
	}
	if !needV {
		return tmp
	}
	out := NewRGB(cw, ch)
	resampleV(out, tmp, kv)
	return out
}

const precisionBits = 32 - 8 - 2 // PIL's PRECISION_BITS for 8-bit images

// coeffs are one pass's filter: for output i, taps bounds[2i+1] input samples from
// bounds[2i], weights k[i*ksize:].
type coeffs struct {
	ksize  int
	bounds []int
	k      []int32
}

func bicubic(x float64) float64 {
	const a = -0.5
	if x < 0 {
		x = -x
	}
	// The explicit float64 conversions keep every product rounded on its own (no
	// fused multiply-add), as PIL's C code computes it.
	if x < 1 {
		t := float64((a+2)*x) - (a + 3)
		return float64(float64(t*x)*x) + 1
	}
	if x < 2 {
		t := float64((x-5)*x) + 8
		return float64(float64(t*x)-4) * a
	}
	return 0
}

// window keeps the outputs [x0, x0+n).
func (c coeffs) window(x0, n int) coeffs {
	return coeffs{ksize: c.ksize, bounds: c.bounds[2*x0 : 2*(x0+n)], k: c.k[x0*c.ksize : (x0+n)*c.ksize]}
}

// bicubicCoeffs is PIL's precompute_coeffs + normalize_coeffs_8bpc for the bicubic
// filter, with the same floating-point operations in the same order.
func bicubicCoeffs(inSize int, in0, in1 float64, outSize int) coeffs {
	const support0 = 2.0
	scale := float64(float32(in1-in0)) / float64(outSize)
	filterscale := scale
	if filterscale < 1 {
		filterscale = 1
	}
	support := support0 * filterscale
	ksize := int(math.Ceil(support))*2 + 1
	c := coeffs{ksize: ksize, bounds: make([]int, 2*outSize), k: make([]int32, outSize*ksize)}
	kk := make([]float64, ksize)
	ss := 1.0 / filterscale
	for xx := 0; xx < outSize; xx++ {
		center := in0 + float64((float64(xx)+0.5)*scale)
		xmin := int(center - support + 0.5)
		if xmin < 0 {
			xmin = 0
		}
		xmax := int(center + support + 0.5)
		if xmax > inSize {
			xmax = inSize
		}
		xmax -= xmin
		ww := 0.0
		for x := 0; x < xmax; x++ {
			w := bicubic(float64(float64(x+xmin)-center+0.5) * ss)
			kk[x] = w
			ww += w
		}
		for x := 0; x < xmax; x++ {
			v := kk[x]
			if ww != 0 {
				v /= ww
			}
			if v < 0 {
				c.k[xx*ksize+x] = int32(-0.5 + float64(v*(1<<precisionBits)))
			} else {
				c.k[xx*ksize+x] = int32(0.5 + float64(v*(1<<precisionBits)))
			}
		}
		c.bounds[2*xx], c.bounds[2*xx+1] = xmin, xmax
	}
	return c
}

// clipFixed is PIL's clip8: the fixed-point sum shifted down and clamped to 0..255.
func clipFixed(v int32) uint8 { return rangeLimit[(v>>precisionBits)&1023] }

// resampleH fills dst (dst.H rows) from src rows first.. with the horizontal filter.
func resampleH(dst, src RGB, first int, c coeffs) {
	const half = 1 << (precisionBits - 1)
	for y := 0; y < dst.H; y++ {
		in := src.Pix[3*src.W*(first+y) : 3*src.W*(first+y+1)]
		out := dst.Pix[3*dst.W*y : 3*dst.W*(y+1)]
		for x := 0; x < dst.W; x++ {
			xmin, n := c.bounds[2*x], c.bounds[2*x+1]
			k := c.k[x*c.ksize : x*c.ksize+n]
			s := in[3*xmin : 3*(xmin+n)]
			r, g, b := int32(half), int32(half), int32(half)
			for len(k) > 0 && len(s) >= 3 {
				kv := k[0]
				r += int32(s[0]) * kv
				g += int32(s[1]) * kv
				b += int32(s[2]) * kv
				k, s = k[1:], s[3:]
			}
			o := out[3*x : 3*x+3 : 3*x+3]
			o[0], o[1], o[2] = clipFixed(r), clipFixed(g), clipFixed(b)
		}
	}
}

// resampleV fills dst from src with the vertical filter. Integer sums do not depend
// on the order of the taps, so each output row accumulates whole input rows, four taps
// at a time.
func resampleV(dst, src RGB, c coeffs) {
	const half = 1 << (precisionBits - 1)
	w := 3 * dst.W
	acc := make([]int32, w)
	row := func(y int) []uint8 { return src.Pix[w*y : w*(y+1)] }
	for y := 0; y < dst.H; y++ {
		ymin, n := c.bounds[2*y], c.bounds[2*y+1]
		k := c.k[y*c.ksize : y*c.ksize+n]
		for i := range acc {
			acc[i] = half
		}
		t := 0
		for ; t+4 <= n; t += 4 {
			r0, r1, r2, r3 := row(ymin+t), row(ymin+t+1), row(ymin+t+2), row(ymin+t+3)
			k0, k1, k2, k3 := k[t], k[t+1], k[t+2], k[t+3]
			r0, r1, r2, r3 = r0[:len(acc)], r1[:len(acc)], r2[:len(acc)], r3[:len(acc)]
			for i := range acc {
				acc[i] += int32(r0[i])*k0 + int32(r1[i])*k1 + int32(r2[i])*k2 + int32(r3[i])*k3
			}
		}
		for ; t < n; t++ {
			r0, k0 := row(ymin + t)[:len(acc)], k[t]
			for i := range acc {
				acc[i] += int32(r0[i]) * k0
			}
		}
		out := dst.Pix[w*y : w*(y+1)]
		out = out[:len(acc)]
		for i, v := range acc {
			out[i] = rangeLimit[(v>>precisionBits)&1023]
		}
	}
}
