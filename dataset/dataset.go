// Package dataset reads image/caption collections (Kaggle Flickr30k, Karpathy split
// JSON, generic CSV/JSONL), splits them deterministically, decodes and preprocesses images
// exactly as transformers' CLIPImageProcessor does with PIL, and serves shuffled batches
// from a pool of workers. It also writes synthetic data sets in the real formats.
//
// The package is pure Go and does not import torch: batches are Go slices that the
// training loop copies into tensors.
//
// # Bad Input
//
// Nothing is dropped silently. Malformed caption rows, missing, truncated or oversized
// images and empty captions are skipped and counted in a [Report], whose Summary names the
// first few offenders.
package dataset

// Split names a partition of a data set.
type Split string

// The splits. Karpathy's "restval" joins Train.
const (
	Train Split = "train"
	Val   Split = "val"
	Test  Split = "test"
	All   Split = "all"
)

// Item is one image and all of its captions.
type Item struct {
	Image    string   // path of the image file
	Name     string   // file name as the caption file spells it (e.g. "1000092795.jpg")
	Captions []string // in file order; at least one
	Split    Split    // Train, Val or Test

	// Offset and Size, when Size > 0, say that the image is those bytes of the file
	// Image: a member of a webdataset shard (ShardItems).
	Offset, Size int64
}

// Dataset is an ordered list of items read from one folder.
type Dataset struct {
	Root   string
	Format string // "flickr30k-kaggle", "karpathy", "csv" or "jsonl"
	Items  []Item
	Report Report // what was repaired or skipped while reading

	// SplitFile is the Karpathy split file whose splits the items carry, relative to
	// Root; "" when the splits come from hashing the image names.
	SplitFile string
}
