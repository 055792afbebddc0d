package dataset

import (
	"fmt"
	"hash/fnv"
	"math"
	"sort"
)

// SplitOptions sizes the validation and test splits of a data set that has no split
// file. The zero value gives the default sizes: 1,000 images each on Flickr30k scale
// (more than LargeDatasetImages images), 5% each on smaller sets, at least one each
// when there are three images or more.
//
// A count wins over a fraction. A negative count or fraction means an empty split.
type SplitOptions struct {
	ValFraction  float64 // fraction of images in Val (0: default)
	TestFraction float64 // fraction of images in Test (0: default)
	ValCount     int     // number of images in Val (0: use ValFraction or the default)
	TestCount    int     // number of images in Test (0: use TestFraction or the default)
}

// LargeDatasetImages is the size above which the default splits are DefaultLargeSplit
// images each rather than a fraction.
const (
	LargeDatasetImages = 20000
	DefaultLargeSplit  = 1000
	DefaultSplitFrac   = 0.05
)

// SplitSizes returns the number of validation and test images for n images.
func (o SplitOptions) SplitSizes(n int) (val, test int, err error) {
	size := func(count int, frac float64, what string) (int, error) {
		switch {
		case count < 0 || (count == 0 && frac < 0):
			return 0, nil
		case count > 0:
			return count, nil
		case frac > 0:
			if frac >= 1 || math.IsNaN(frac) {
				return 0, fmt.Errorf("%s fraction %g: want a value below 1", what, frac)
			}
			k := int(math.Round(frac * float64(n)))
			if k == 0 && n >= 3 {
				k = 1
			}
			return k, nil
		case n > LargeDatasetImages:
			return DefaultLargeSplit, nil
		case n >= 3:
			return max(1, int(math.Round(DefaultSplitFrac*float64(n)))), nil
		default:
			return 0, nil
		}
	}
	if val, err = size(o.ValCount, o.ValFraction, "validation"); err != nil {
		return 0, 0, err
	}
	if test, err = size(o.TestCount, o.TestFraction, "test"); err != nil {
		return 0, 0, err
	}
	if val+test > n {
		return 0, 0, fmt.Errorf("%d validation + %d test images exceed the %d images of the data set", val, test, n)
	}
	return val, test, nil
}

// splitKey is the rank of an image name: FNV-64a of the name, mixed by splitmix64's
// finaliser so that names differing in one character spread over the whole range.
func splitKey(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return mix64(h.Sum64())
}

// mix64 is splitmix64's finaliser.
func mix64(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// AssignSplits returns the split of each name: names are ranked by a hash of the name
// alone; the test lowest-ranked names go to Test, the next val to Val, the rest to
// Train. The result depends only on the set of names, not on their order, and adding or
// removing a name moves at most one other name across each boundary.
func AssignSplits(names []string, val, test int) []Split {
	type ranked struct {
		key uint64
		i   int
	}
	r := make([]ranked, len(names))
	for i, n := range names {
		r[i] = ranked{splitKey(n), i}
	}
	sort.Slice(r, func(a, b int) bool {
		if r[a].key != r[b].key {
			return r[a].key < r[b].key
		}
		return names[r[a].i] < names[r[b].i]
	})
	out := make([]Split, len(names))
	for k, x := range r {
		switch {
		case k < test:
			out[x.i] = Test
		case k < test+val:
			out[x.i] = Val
		default:
			out[x.i] = Train
		}
	}
	return out
}

// Split returns the items of split s in data set order; All returns every item. The
// slice is new; the items share their caption slices with d.Items.
func (d *Dataset) Split(s Split) []Item {
	var out []Item
	for _, it := range d.Items {
		if s == All || it.Split == s {
			out = append(out, it)
		}
	}
	return out
}

// Captions is the number of captions in split s (All: in the whole data set).
func (d *Dataset) Captions(s Split) int {
	n := 0
	for _, it := range d.Items {
		if s == All || it.Split == s {
			n += len(it.Captions)
		}
	}
	return n
}

// ParseSplit turns "train", "val", "test" or "all" into a Split.
func ParseSplit(s string) (Split, error) {
	switch Split(s) {
	case Train, Val, Test, All:
		return Split(s), nil
	}
	return "", fmt.Errorf("unknown split %q: want train, val, test or all", s)
}
