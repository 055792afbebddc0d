package dataset

import (
	"math"
	"math/rand/v2"
)

// AugmentOptions configure training augmentation. The zero value does none: images
// get CLIP's deterministic resize and centre crop.
//
// With RandomResizedCrop, a box covering a random fraction Scale of the image's area
// with a random aspect ratio (w/h, log-uniform in Ratio) is cut and resized to S x S
// with PIL's bicubic filter, as torchvision's RandomResizedCrop (10 tries, then a
// centre crop clamped to Ratio). The box is taken from the decoded image; when the
// loader serves an image from the .npy cache it is taken from the cached S x S centre
// crop instead (so a cached epoch never sees the borders the centre crop dropped).
// HFlip mirrors the result with probability 1/2. All draws come from the sample's own
// RNG, so they depend on (seed, epoch, item index) only.
type AugmentOptions struct {
	RandomResizedCrop bool
	Scale             [2]float64 // area fraction range; zero means DefaultScale
	Ratio             [2]float64 // aspect ratio range (w/h); zero means DefaultRatio
	HFlip             bool
}

// The defaults of AugmentOptions: a mild crop suited to captioned images, whose text
// often names things near the borders.
var (
	DefaultScale = [2]float64{0.9, 1.0}
	DefaultRatio = [2]float64{3.0 / 4.0, 4.0 / 3.0}
)

// DefaultAugment is random resized crop with the default ranges plus flips.
func DefaultAugment() AugmentOptions {
	return AugmentOptions{RandomResizedCrop: true, HFlip: true}
}

// Enabled reports whether o changes anything.
func (o AugmentOptions) Enabled() bool { return o.RandomResizedCrop || o.HFlip }

// Apply makes the size x size training image from img with the draws of rng. Without
// RandomResizedCrop it is ResizeCropUint8 (or img itself when already size x size).
func (o AugmentOptions) Apply(img RGB, size int, rng *rand.Rand) RGB {
	var out RGB
	switch {
	case o.RandomResizedCrop:
		x, y, w, h := o.cropBox(img.W, img.H, rng)
		out = ResizeBox(img, [4]int{x, y, x + w, y + h}, size, size)
	case img.W == size && img.H == size:
		out = img
	default:
		out = ResizeCropUint8(img, size)
	}
	if o.HFlip && rng.IntN(2) == 1 {
		if &out.Pix[0] == &img.Pix[0] {
			out = RGB{W: img.W, H: img.H, Pix: append([]uint8(nil), img.Pix...)}
		}
		FlipHorizontal(out)
	}
	return out
}

// cropBox is torchvision's RandomResizedCrop.get_params: (left, top, width, height).
func (o AugmentOptions) cropBox(width, height int, rng *rand.Rand) (x, y, w, h int) {
	scale, ratio := o.Scale, o.Ratio
	if scale == [2]float64{} {
		scale = DefaultScale
	}
	if ratio == [2]float64{} {
		ratio = DefaultRatio
	}
	area := float64(width * height)
	lr0, lr1 := math.Log(ratio[0]), math.Log(ratio[1])
	for range 10 {
		target := area * (scale[0] + rng.Float64()*(scale[1]-scale[0]))
		aspect := math.Exp(lr0 + rng.Float64()*(lr1-lr0))
		w = int(math.RoundToEven(math.Sqrt(target * aspect)))
		h = int(math.RoundToEven(math.Sqrt(target / aspect)))
		if w > 0 && w <= width && h > 0 && h <= height {
			y = rng.IntN(height - h + 1)
			x = rng.IntN(width - w + 1)
			return x, y, w, h
		}
	}
	in := float64(width) / float64(height)
	switch {
	case in < min(ratio[0], ratio[1]):
		w = width
		h = int(math.RoundToEven(float64(w) / min(ratio[0], ratio[1])))
	case in > max(ratio[0], ratio[1]):
		h = height
		w = int(math.RoundToEven(float64(h) * max(ratio[0], ratio[1])))
	default:
		w, h = width, height
	}
	return (width - w) / 2, (height - h) / 2, w, h
}

// FlipHorizontal mirrors img left to right in place.
func FlipHorizontal(img RGB) {
	for y := 0; y < img.H; y++ {
		row := img.Pix[3*img.W*y : 3*img.W*(y+1)]
		for i, j := 0, img.W-1; i < j; i, j = i+1, j-1 {
			a, b := row[3*i:3*i+3], row[3*j:3*j+3]
			a[0], a[1], a[2], b[0], b[1], b[2] = b[0], b[1], b[2], a[0], a[1], a[2]
		}
	}
}
