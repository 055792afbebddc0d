package dataset

import "image"

// JPEG colour, done as libjpeg(-turbo) does it for PIL, which decodes with the default
// settings: "fancy" chroma upsampling and the integer YCbCr->RGB conversion of
// jdcolor.c. Go's image/jpeg leaves the chroma planes subsampled, so both steps are
// ours; only the IDCT is Go's.

// libjpeg's fixed-point YCbCr->RGB tables (16 fractional bits):
//
//	R = Y + crR[Cr]
//	G = Y + (cbG[Cb] + crG[Cr]) >> 16
//	B = Y + cbB[Cb]
var crR, cbB, crG, cbG [256]int32

func init() {
	const half = 1 << 15
	fix := func(x float64) int64 { return int64(x*(1<<16) + 0.5) }
	for i := 0; i < 256; i++ {
		x := int64(i - 128)
		crR[i] = int32((fix(1.40200)*x + half) >> 16)
		cbB[i] = int32((fix(1.77200)*x + half) >> 16)
		crG[i] = int32(-fix(0.71414) * x)
		cbG[i] = int32(-fix(0.34414)*x + half)
	}
}

// jpegYCbCrToRGB writes m into out (same size), upsampling chroma as libjpeg does.
func jpegYCbCrToRGB(m *image.YCbCr, out RGB) {
	w, h := out.W, out.H
	hf, vf := 1, 1 // luma samples per chroma sample, across and down
	switch m.SubsampleRatio {
	case image.YCbCrSubsampleRatio422:
		hf = 2
	case image.YCbCrSubsampleRatio420:
		hf, vf = 2, 2
	case image.YCbCrSubsampleRatio440:
		vf = 2
	case image.YCbCrSubsampleRatio411:
		hf = 4
	case image.YCbCrSubsampleRatio410:
		hf, vf = 4, 2
	}
	// The chroma planes as libjpeg sizes them (downsampled_width/height).
	cw, ch := (w+hf-1)/hf, (h+vf-1)/vf
	y0, x0 := m.Rect.Min.Y, m.Rect.Min.X
	crow := func(plane []uint8, r int) []uint8 {
		off := m.COffset(x0, y0+r*vf)
		return plane[off : off+cw]
	}
	cb := make([]uint8, w+4) // the upsampled chroma of one output row
	cr := make([]uint8, w+4)
	sum := make([]int32, cw)
	vsum := func(plane []uint8, r, nb int) {
		a, b := crow(plane, r), crow(plane, nb)
		b = b[:len(a)]
		sum := sum[:len(a)]
		for i, v := range a {
			sum[i] = 3*int32(v) + int32(b[i])
		}
	}
	for y := 0; y < h; y++ {
		r := y / vf
		var cbRow, crRow []uint8
		switch {
		case vf == 2 && (hf == 2 && cw > 2 || hf == 1):
			// Vertical triangle: 3/4 of the nearest chroma row, 1/4 of the next
			// nearest (above for even rows, below for odd), edges replicated.
			nb := r - 1
			if y%2 == 1 {
				nb = r + 1
			}
			nb = max(0, min(nb, ch-1))
			for _, dst := range [2][]uint8{cb, cr} {
				plane := m.Cb
				if &dst[0] == &cr[0] {
					plane = m.Cr
				}
				vsum(plane, r, nb)
				if hf == 2 {
					fancyH2V2(sum, dst)
					continue
				}
				bias := int32(1)
				if y%2 == 1 {
					bias = 2
				}
				for i, s := range sum {
					dst[i] = uint8((s + bias) >> 2)
				}
			}
			cbRow, crRow = cb, cr
		case hf == 2 && vf == 1 && cw > 2:
			fancyH2V1(crow(m.Cb, r), cb)
			fancyH2V1(crow(m.Cr, r), cr)
			cbRow, crRow = cb, cr
		case hf == 1: // 4:4:4
			cbRow, crRow = crow(m.Cb, r), crow(m.Cr, r)
		default: // plain replication (libjpeg's h2v1/h2v2/int_upsample)
			boxUpsample(crow(m.Cb, r), cb, hf)
			boxUpsample(crow(m.Cr, r), cr, hf)
			cbRow, crRow = cb, cr
		}
		off := m.YOffset(x0, y0+y)
		ycc2rgb(out.Pix[3*w*y:3*w*(y+1)], m.Y[off:off+w], cbRow[:w], crRow[:w])
	}
}

// rangeLimit clamps v in [-512, 512) to 0..255 as rangeLimit[v&1023], without branches.
var rangeLimit [1024]uint8

func init() {
	for i := range rangeLimit {
		switch {
		case i >= 512:
			rangeLimit[i] = 0
		case i > 255:
			rangeLimit[i] = 255
		default:
			rangeLimit[i] = uint8(i)
		}
	}
}

// ycc2rgb is libjpeg's ycc_rgb_convert for one row.
func ycc2rgb(o, yr, cb, cr []uint8) {
	o = o[:3*len(yr)]
	cb, cr = cb[:len(yr)], cr[:len(yr)]
	for x, yv := range yr {
		Y := int32(yv)
		cbv, crv := cb[x], cr[x]
		p := o[3*x : 3*x+3 : 3*x+3]
		p[0] = rangeLimit[(Y+crR[crv])&1023]
		p[1] = rangeLimit[(Y+(cbG[cbv]+crG[crv])>>16)&1023]
		p[2] = rangeLimit[(Y+cbB[cbv])&1023]
	}
}

// fancyH2V2 is the horizontal half of libjpeg's h2v2_fancy_upsample: from column sums
// (3*nearest row + next nearest row) it makes two outputs per column with weights
// 3/4, 1/4 and the rounding biases 8 and 7 that libjpeg uses (len(sum) > 2).
func fancyH2V2(sum []int32, dst []uint8) {
	n := len(sum)
	dst[0] = uint8((sum[0]*4 + 8) >> 4)
	dst[1] = uint8((sum[0]*3 + sum[1] + 7) >> 4)
	for i := 1; i < n-1; i++ {
		dst[2*i] = uint8((sum[i]*3 + sum[i-1] + 8) >> 4)
		dst[2*i+1] = uint8((sum[i]*3 + sum[i+1] + 7) >> 4)
	}
	dst[2*n-2] = uint8((sum[n-1]*3 + sum[n-2] + 8) >> 4)
	dst[2*n-1] = uint8((sum[n-1]*4 + 7) >> 4)
}

// fancyH2V1 is libjpeg's h2v1_fancy_upsample (len(in) > 2).
func fancyH2V1(in, dst []uint8) {
	n := len(in)
	dst[0] = in[0]
	dst[1] = uint8((int32(in[0])*3 + int32(in[1]) + 2) >> 2)
	for i := 1; i < n-1; i++ {
		v := int32(in[i]) * 3
		dst[2*i] = uint8((v + int32(in[i-1]) + 1) >> 2)
		dst[2*i+1] = uint8((v + int32(in[i+1]) + 2) >> 2)
	}
	dst[2*n-2] = uint8((int32(in[n-1])*3 + int32(in[n-2]) + 1) >> 2)
	dst[2*n-1] = in[n-1]
}

func boxUpsample(in, dst []uint8, f int) {
	if f == 1 {
		copy(dst, in)
		return
	}
	for i, v := range in {
		for k := 0; k < f; k++ {
			dst[f*i+k] = v
		}
	}
}
