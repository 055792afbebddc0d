package dataset

import (
	"math"
	"slices"
	"sync"
)

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
	if cw <= 0 || ch <= 0 || img.W <= 0 || img.H <= 0 {
		return NewRGB(max(cw, 0), max(ch, 0))
	}
	needH := w != img.W || box[0] != 0 || box[2] != img.W
	needV := h != img.H || box[1] != 0 || box[3] != img.H
	var kh, kv coeffs
	first, last := y0, y0+ch // source rows the vertical pass reads
	if needH {
		kh = bicubicCoeffs(img.W, float64(box[0]), float64(box[2]), w).window(x0, cw)
	}
	if needV {
		kv = bicubicCoeffs(img.H, float64(box[1]), float64(box[3]), h).window(y0, ch)
		first, last = kv.start[0], kv.start[ch-1]+kv.taps
		for i := range kv.start {
			kv.start[i] -= first
		}
	}
	tmp := getPairs(cw, last-first, img.W)
	defer pairsPool.Put(tmp)
	if needH {
		resampleH(tmp, img, first, kh)
	} else {
		for y := range tmp.h {
			s := 3 * ((first+y)*img.W + x0)
			tmp.setRow(y, img.Pix[s:s+3*cw])
		}
	}
	out := NewRGB(cw, ch)
	if !needV {
		for y := range ch {
			tmp.getRow(y, out.Pix[3*cw*y:3*cw*(y+1)])
		}
		return out
	}
	resampleV(out, tmp, kv)
	return out
}

// pairs is the image between the two passes, laid out for the vertical pass: the 3*W
// levels (0..255) of row y two to an int64 word, value i of the row in the low (i even)
// or high (i odd) 32 bits of word stride*y + i/2. One multiplication of a word by a
// weight then makes the products of two values at once (see resampleV). It takes four
// times the bytes of the uint8 rows it holds (cw x the source rows the vertical pass
// reads), kept in pairsPool between resizes.
type pairs struct {
	stride, h int
	v         []int64
	acc       []int64 // resampleV's running sums, one row of words
	hin       []int64 // resampleH's two source rows, packed
}

// pairsPool holds intermediate images between resizes.
var pairsPool = sync.Pool{New: func() any { return &pairs{} }}

// getPairs returns a pooled w x h intermediate image (contents undefined) for a source
// srcW pixels wide.
func getPairs(w, h, srcW int) *pairs {
	p := pairsPool.Get().(*pairs)
	p.stride, p.h = (3*w+1)/2, h
	if n := p.stride * h; cap(p.v) < n {
		p.v = make([]int64, n)
	}
	p.v = p.v[:p.stride*h]
	if cap(p.acc) < p.stride {
		p.acc = make([]int64, p.stride)
	}
	p.acc = p.acc[:p.stride]
	if cap(p.hin) < 3*srcW {
		p.hin = make([]int64, 3*srcW)
	}
	return p
}

func (p *pairs) row(y int) []int64 { return p.v[p.stride*y : p.stride*(y+1)] }

// setRow stores the 3*W levels of row y.
func (p *pairs) setRow(y int, levels []uint8) {
	r := p.row(y)
	for j := range r {
		lo, hi := int64(levels[2*j]), int64(0)
		if 2*j+1 < len(levels) {
			hi = int64(levels[2*j+1])
		}
		r[j] = lo | hi<<32
	}
}

// getRow loads the 3*W levels of row y into out.
func (p *pairs) getRow(y int, out []uint8) {
	for j, w := range p.row(y) {
		out[2*j] = uint8(w)
		if 2*j+1 < len(out) {
			out[2*j+1] = uint8(w >> 32)
		}
	}
}

const precisionBits = 32 - 8 - 2 // PIL's PRECISION_BITS for 8-bit images

// coeffs are one pass's filter in PIL's 22-bit fixed point: output i is the weighted sum
// of input samples start[i] .. start[i]+taps-1 with weights k[i*taps:(i+1)*taps].
//
// PIL gives each output its own number of taps (at most ksize); here every output has
// the same number, the largest PIL uses in the pass, the extra ones with weight zero
// (start is moved left where the taps would pass the input's end), so that the
// resampling loops run a fixed count without per-output bounds. Integer sums do not
// depend on the order or on zero terms, so the result is PIL's bit for bit.
type coeffs struct {
	taps  int
	start []int
	k     []int32
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

// window keeps the outputs [x0, x0+n), in a copy of start (the caller may shift it).
func (c coeffs) window(x0, n int) coeffs {
	return coeffs{taps: c.taps, start: slices.Clone(c.start[x0 : x0+n]), k: c.k[x0*c.taps : (x0+n)*c.taps]}
}

// bicubicCoeffs is PIL's precompute_coeffs + normalize_coeffs_8bpc for the bicubic
// filter, with the same floating-point operations in the same order, laid out with a
// fixed tap count (see coeffs).
func bicubicCoeffs(inSize int, in0, in1 float64, outSize int) coeffs {
	const support0 = 2.0
	scale := float64(float32(in1-in0)) / float64(outSize)
	filterscale := scale
	if filterscale < 1 {
		filterscale = 1
	}
	support := support0 * filterscale
	ksize := int(math.Ceil(support))*2 + 1
	// PIL's layout first: ksize weights per output, xmin and the count used.
	k := make([]int32, outSize*ksize)
	xmins, counts := make([]int, outSize), make([]int, outSize)
	kk := make([]float64, ksize)
	ss := 1.0 / filterscale
	taps := 1
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
				k[xx*ksize+x] = int32(-0.5 + float64(v*(1<<precisionBits)))
			} else {
				k[xx*ksize+x] = int32(0.5 + float64(v*(1<<precisionBits)))
			}
		}
		xmins[xx], counts[xx] = xmin, max(xmax, 0)
		taps = max(taps, xmax)
	}
	// Then the fixed count: taps <= inSize, as every count is.
	c := coeffs{taps: taps, start: make([]int, outSize), k: make([]int32, outSize*taps)}
	for xx := range outSize {
		s := min(xmins[xx], inSize-taps)
		c.start[xx] = s
		copy(c.k[xx*taps+xmins[xx]-s:], k[xx*ksize:xx*ksize+counts[xx]])
	}
	return c
}

// clipFixed is PIL's clip8: the fixed-point sum shifted down and clamped to 0..255.
func clipFixed(v int32) uint8 { return rangeLimit[(v>>precisionBits)&1023] }

// resampleH fills dst (dst.h rows, len(c.start) pixels each) from src rows first..
// with the horizontal filter, each value rounded and clipped to 0..255 as PIL does
// between the passes. Two source rows go through at once, packed two values to a word
// as in resampleV (rows y and y+1 share the weights), the taps four at a time, then the
// last one to three.
func resampleH(dst *pairs, src RGB, first int, c coeffs) {
	T := c.taps
	c0, c1 := 3*c.start[0], 3*(c.start[len(c.start)-1]+T) // the values the taps read
	pk := dst.hin[:3*src.W]
	for y := 0; y < dst.h; y += 2 {
		a := src.Pix[3*src.W*(first+y) : 3*src.W*(first+y+1)]
		b := a
		if y+1 < dst.h {
			b = src.Pix[3*src.W*(first+y+1) : 3*src.W*(first+y+2)]
		}
		a, b, p := a[c0:c1], b[c0:c1], pk[c0:c1]
		for i := range p {
			p[i] = int64(a[i]) | int64(b[i])<<32
		}
		outA, outB := dst.row(y), []int64(nil)
		if y+1 < dst.h {
			outB = dst.row(y + 1)
		}
		for x, s0 := range c.start {
			k := c.k[x*T : x*T+T]
			s := pk[3*s0 : 3*(s0+T)]
			r, g, b := halfPair, halfPair, halfPair
			for len(k) >= 4 && len(s) >= 12 {
				k0, k1, k2, k3 := int64(k[0]), int64(k[1]), int64(k[2]), int64(k[3])
				p := s[:12:12]
				r += p[0]*k0 + p[3]*k1 + p[6]*k2 + p[9]*k3
				g += p[1]*k0 + p[4]*k1 + p[7]*k2 + p[10]*k3
				b += p[2]*k0 + p[5]*k1 + p[8]*k2 + p[11]*k3
				k, s = k[4:], s[12:]
			}
			switch { // the last one to three taps
			case len(k) == 3 && len(s) >= 9:
				k0, k1, k2 := int64(k[0]), int64(k[1]), int64(k[2])
				p := s[:9:9]
				r += p[0]*k0 + p[3]*k1 + p[6]*k2
				g += p[1]*k0 + p[4]*k1 + p[7]*k2
				b += p[2]*k0 + p[5]*k1 + p[8]*k2
			case len(k) == 2 && len(s) >= 6:
				k0, k1 := int64(k[0]), int64(k[1])
				p := s[:6:6]
				r += p[0]*k0 + p[3]*k1
				g += p[1]*k0 + p[4]*k1
				b += p[2]*k0 + p[5]*k1
			case len(k) == 1 && len(s) >= 3:
				k0 := int64(k[0])
				r += s[0] * k0
				g += s[1] * k0
				b += s[2] * k0
			}
			rA, rB := splitPair(r)
			gA, gB := splitPair(g)
			bA, bB := splitPair(b)
			putPixel(outA, x, rA, gA, bA)
			if outB != nil {
				putPixel(outB, x, rB, gB, bB)
			}
		}
	}
}

// splitPair returns the two clipped 8-bit results of a word holding two fixed-point
// sums (see resampleV).
func splitPair(v int64) (lo, hi int64) {
	l := int32(v)
	return int64(clipFixed(l)), int64(clipFixed(int32((v - int64(l)) >> 32)))
}

// putPixel stores pixel x's three levels, values 3x, 3x+1, 3x+2 of the row: words
// 3x/2 on. Pixels are stored left to right (an odd pixel completes the word its left
// neighbour began).
func putPixel(out []int64, x int, r, g, b int64) {
	j := 3 * x / 2
	if x%2 == 0 {
		out[j] = r | g<<32
		if j+1 < len(out) {
			out[j+1] = b
		}
		return
	}
	w := out[j : j+2 : j+2]
	w[0] |= r << 32
	w[1] = g | b<<32
}

// resampleV fills dst from src with the vertical filter. Integer sums do not depend on
// the order of the taps, so each output row accumulates whole input rows, four taps at
// a time, the last group (one to four taps) adding, clipping and storing in one pass.
//
// Two values share each int64 word: a word a + b<<32 times a weight k is a*k + (b*k)<<32,
// so a sum of such products is A + B<<32 with A and B the two values' sums (PIL's int32
// sums: |A|, |B| < 2^31, so no int64 overflow), from which A is the low 32 bits read as
// an int32 and B = (sum - A) >> 32, exactly.
func resampleV(dst RGB, src *pairs, c coeffs) {
	w := 3 * dst.W
	T := c.taps
	for y := range dst.H {
		s0 := c.start[y]
		k := c.k[y*T : y*T+T]
		out := dst.Pix[w*y : w*(y+1)]
		t := 0
		for ; T-t > 4; t += 4 {
			vAcc4(src.acc, src.row(s0+t), src.row(s0+t+1), src.row(s0+t+2), src.row(s0+t+3), k[t:t+4], t == 0)
		}
		if t == 0 {
			for i := range src.acc {
				src.acc[i] = halfPair
			}
		}
		var r [4][]int64
		for i := range T - t {
			r[i] = src.row(s0 + t + i)
		}
		vLast(out, src.acc, r, k[t:])
	}
}

// halfPair is the rounding half of PIL's sums in both halves of a word.
const halfPair = int64(1)<<(precisionBits-1) | int64(1)<<(precisionBits-1+32)

// vAcc4 adds four rows' taps to acc (which starts at halfPair when init).
func vAcc4(acc, r0, r1, r2, r3 []int64, k []int32, init bool) {
	k0, k1, k2, k3 := int64(k[0]), int64(k[1]), int64(k[2]), int64(k[3])
	r0, r1, r2, r3 = r0[:len(acc)], r1[:len(acc)], r2[:len(acc)], r3[:len(acc)]
	if init {
		for i := range acc {
			acc[i] = halfPair + r0[i]*k0 + r1[i]*k1 + r2[i]*k2 + r3[i]*k3
		}
		return
	}
	for i := range acc {
		acc[i] += r0[i]*k0 + r1[i]*k1 + r2[i]*k2 + r3[i]*k3
	}
}

// vLast adds the last len(k) (1..4) rows' taps to acc, splits each word into its two
// sums and stores them clipped in out (3*W values: the last word's high half is unused
// when that is odd).
func vLast(out []uint8, acc []int64, r [4][]int64, k []int32) {
	var kk [4]int64
	for i, v := range k {
		kk[i] = int64(v)
	}
	for i := range r { // rows beyond len(k): row 0 again, with weight 0
		if r[i] == nil {
			r[i] = r[0]
		}
	}
	n := len(acc)
	r0, r1, r2, r3 := r[0][:n], r[1][:n], r[2][:n], r[3][:n]
	k0, k1, k2, k3 := kk[0], kk[1], kk[2], kk[3]
	m := len(out) / 2
	o := out[:2*m]
	for j := range m {
		lo, hi := splitPair(acc[j] + r0[j]*k0 + r1[j]*k1 + r2[j]*k2 + r3[j]*k3)
		p := o[2*j : 2*j+2 : 2*j+2]
		p[0], p[1] = uint8(lo), uint8(hi)
	}
	if len(out)%2 == 1 {
		lo, _ := splitPair(acc[m] + r0[m]*k0 + r1[m]*k1 + r2[m]*k2 + r3[m]*k3)
		out[2*m] = uint8(lo)
	}
}
