package dataset

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
)

// LoaderOptions configure a Loader. Zero values take the documented defaults.
type LoaderOptions struct {
	Size      int   // image side S (default 224)
	BatchSize int   // images per batch (default 32)
	Workers   int   // decoding goroutines (default runtime.NumCPU())
	Prefetch  int   // finished batches kept ready ahead of Next (default 2)
	Seed      int64 // seeds the shuffle, the caption draws and the augmentation
	Shuffle   bool  // a new seeded permutation each epoch; false keeps item order
	DropLast  bool  // drop a last, partial batch (training)

	// FirstCaption always takes an image's first caption (evaluation); otherwise one
	// caption is drawn per image and epoch from the sample's RNG.
	FirstCaption bool

	// Augment is applied to every image when enabled (training).
	Augment AugmentOptions

	// Tokenize, when set, turns the chosen caption into ids already padded to the
	// context length; the loader concatenates them into Batch.InputIDs. It is called
	// from the worker goroutines, so it must be safe for concurrent use.
	Tokenize func(caption string) []int64

	// Uint8 fills Batch.PixelsU8 (the S x S crops, not normalised) instead of
	// Batch.Pixels; the consumer normalises, e.g. on the GPU.
	Uint8 bool

	// MaxPixels is the decoding limit (see ReadImage).
	MaxPixels int

	// CacheDir is a folder written by BuildCache (e.g. DefaultCacheDir(ds.Root)). When
	// it holds a cache of Size, images it holds unchanged are read from it instead of
	// being decoded; others are decoded as usual. Empty: no cache.
	CacheDir string

	// Report, when set, records each unreadable image (once) with its reason.
	Report *Report

	// World > 1 makes the loader serve rank Rank's share of each global batch
	// (data-parallel training): batch j of an epoch started at sample s is the fixed
	// positions [s+j·BatchSize, s+(j+1)·BatchSize) of the epoch's order, every rank
	// draws the same order, and rank r loads only the contiguous rows [n·r/World,
	// n·(r+1)/World) of those n positions. Unreadable images are left out of the share
	// (counted as usual) instead of being replaced, so a share may be short. The
	// caption and augmentation of a sample depend on (Seed, epoch, item), never on the
	// rank, so the ranks' shares together are the batch a single loader would serve
	// when every image is readable.
	Rank, World int
}

// Position is a point in the data stream to resume from: Sample positions of Epoch's
// order have been consumed by the first Batch batches.
type Position struct {
	Epoch  int `json:"epoch"`
	Batch  int `json:"batch"`
	Sample int `json:"sample"`
}

// Batch is one batch of images and captions, in the epoch's order.
type Batch struct {
	Epoch, Index int // Index counts the epoch's batches from 0
	Size         int // image side S

	// Pixels holds len(Items) images, each 3*S*S float32 normalised CHW; nil with
	// LoaderOptions.Uint8.
	Pixels []float32
	// PixelsU8 holds len(Items) images, each S*S*3 uint8 HWC (N,S,S,3 like the cache),
	// only with LoaderOptions.Uint8.
	PixelsU8 []uint8
	// InputIDs holds len(Items) rows of Tokenize's ids when Tokenize is set.
	InputIDs []int64

	Items    []int    // indices into the loader's items (a StreamLoader: stream positions)
	Captions []string // the caption drawn for each image
	Keys     []string // a StreamLoader's sample names ("SHARD.tar:KEY"); nil for a Loader
	Next     Position // where to resume after this batch

	release func(*Batch)
}

// Len is the number of images in b.
func (b *Batch) Len() int { return len(b.Items) }

// Release hands b's buffers back to the loader for reuse; b must not be used after.
// Calling it is optional (unreleased batches are garbage collected).
func (b *Batch) Release() {
	if b != nil && b.release != nil {
		r := b.release
		b.release = nil
		r(b)
	}
}

// Loader serves batches of decoded, preprocessed images from a pool of workers.
//
// Determinism: the batches of an epoch (their items, captions, pixels and order)
// depend only on the items, the options and (Seed, epoch), never on the number of
// workers or on timing. Each epoch's order is a permutation drawn from (Seed, epoch);
// each sample draws its caption and augmentation from an RNG of (Seed, epoch, item
// index). Workers decode ahead in order, at most a bounded window of images beyond
// the Prefetch finished batches, and a single assembler puts results back in order.
//
// Unreadable images are skipped and counted once (Skipped, LoaderOptions.Report). In
// one process they are replaced by the next images of the order, so batches stay full;
// with World > 1 they are left out of the rank's share, which may then be short (see
// LoaderOptions.Rank).
//
// Start (or StartAt) begins an epoch, Next returns its batches then io.EOF, Close
// stops every goroutine. Start, Next and Close are meant for one consumer goroutine.
type Loader struct {
	items []Item
	opts  LoaderOptions

	cache   *Cache
	entries []CacheEntry // per item, valid when hasEntry
	has     []bool

	f32Pool, u8Pool, batchPool sync.Pool

	badMu    sync.Mutex
	bad      map[int]error
	badOrder []error
	hits     atomic.Int64

	mu     sync.Mutex
	run    *loaderRun
	closed bool
}

type loaderRun struct {
	cancel  context.CancelFunc
	batches chan *Batch
	err     error // set before batches is closed
	wg      sync.WaitGroup
}

type sample struct {
	pos, idx int
	ok       bool
	f32      []float32
	u8       []uint8
	caption  string
	ids      []int64
	key      string // a stream's sample name (StreamLoader), else ""
}

// NewLoader makes a loader over items. It opens LoaderOptions.CacheDir's cache when
// there is a valid one for Size (see CacheUsed); no goroutine runs before Start.
func NewLoader(items []Item, opts LoaderOptions) *Loader {
	if opts.Size <= 0 {
		opts.Size = 224
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 32
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.NumCPU()
	}
	if opts.Prefetch <= 0 {
		opts.Prefetch = 2
	}
	l := &Loader{items: items, opts: opts, bad: map[int]error{}}
	if opts.CacheDir != "" {
		if c, err := OpenCache(opts.CacheDir, opts.Size); err == nil {
			l.cache = c
			l.entries = make([]CacheEntry, len(items))
			l.has = make([]bool, len(items))
			n := 0
			for i, it := range items {
				if it.Size == 0 { // a shard's members are not cached
					l.entries[i], l.has[i] = c.Lookup(it.Image)
				}
				if l.has[i] {
					n++
				}
			}
			if n == 0 {
				c.Close()
				l.cache, l.entries, l.has = nil, nil, nil
			}
		}
	}
	return l
}

// CacheUsed is the number of items served from the .npy cache (0: no cache).
func (l *Loader) CacheUsed() int {
	n := 0
	for _, h := range l.has {
		if h {
			n++
		}
	}
	return n
}

// CacheHits counts the samples read from the cache so far.
func (l *Loader) CacheHits() int64 { return l.hits.Load() }

// Len is the number of batches in an epoch when every image is readable.
func (l *Loader) Len() int {
	n, b := len(l.items), l.opts.BatchSize
	if l.opts.DropLast {
		return n / b
	}
	return (n + b - 1) / b
}

// Skipped is the number of distinct images skipped so far, with their errors (in the
// order they were met; each names its file).
func (l *Loader) Skipped() (int, []error) {
	l.badMu.Lock()
	defer l.badMu.Unlock()
	return len(l.badOrder), append([]error(nil), l.badOrder...)
}

// Order is the epoch's permutation of item indices.
func (l *Loader) Order(epoch int) []int {
	order := make([]int, len(l.items))
	for i := range order {
		order[i] = i
	}
	if l.opts.Shuffle {
		rng := rand.New(rand.NewPCG(seedMix(uint64(l.opts.Seed)), seedMix(uint64(epoch)^0x5eed_0f_0de5)))
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	}
	return order
}

func seedMix(x uint64) uint64 { // splitmix64's finaliser
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// SampleRNG is the RNG of item idx in epoch: it draws the caption, then the
// augmentation.
func SampleRNG(seed int64, epoch, idx int) *rand.Rand {
	return rand.New(rand.NewPCG(seedMix(uint64(seed)^seedMix(uint64(epoch))), seedMix(uint64(idx)+0x1d)))
}

// Start begins epoch, skipping its first skipBatches batches, counted as full batches
// of readable images (exact unless images were skipped before that point; StartAt with
// a Batch's Next position is exact). A running epoch is stopped first.
func (l *Loader) Start(epoch, skipBatches int) error {
	return l.StartAt(Position{Epoch: epoch, Batch: skipBatches, Sample: skipBatches * l.opts.BatchSize})
}

// StartAt begins the epoch at p, e.g. the Next of the last batch a checkpoint saw.
func (l *Loader) StartAt(p Position) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("dataset: loader is closed")
	}
	l.stopLocked()
	order := l.Order(p.Epoch)
	start := min(max(p.Sample, 0), len(order))
	ctx, cancel := context.WithCancel(context.Background())
	r := &loaderRun{cancel: cancel, batches: make(chan *Batch, l.opts.Prefetch-1)}
	window := 4*l.opts.Workers + 4
	tokens := make(chan struct{}, window)
	jobs := make(chan int)
	results := make(chan *sample, window)
	positions := [][2]int{{start, len(order)}} // the positions [lo, hi) to load
	if l.opts.World > 1 {
		positions = l.shares(start, len(order)) // this rank's rows of each batch
	}

	r.wg.Add(2 + l.opts.Workers)
	go func() { // dispatcher
		defer r.wg.Done()
		defer close(jobs)
		for _, span := range positions {
			for pos := span[0]; pos < span[1]; pos++ {
				select {
				case tokens <- struct{}{}:
				case <-ctx.Done():
					return
				}
				select {
				case jobs <- pos:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	startWorkers(ctx, l.opts.Workers, &r.wg, jobs, results, func(pos int) *sample { return l.load(p.Epoch, pos, order[pos]) })
	go func() { // assembler
		defer r.wg.Done()
		defer close(r.batches)
		if l.opts.World > 1 {
			r.err = l.assembleShares(ctx, p, start, positions, tokens, results, r.batches)
			return
		}
		r.err = l.assemble(ctx, p, start, order, tokens, results, r.batches)
	}()
	l.run = r
	return nil
}

// awaitSample returns the sample at position pos of the epoch's order, keeping the
// workers' results that arrive before it in pending; nil when ctx is cancelled.
func awaitSample(ctx context.Context, pending map[int]*sample, results <-chan *sample, pos int) *sample {
	for {
		if s, ok := pending[pos]; ok {
			delete(pending, pos)
			return s
		}
		select {
		case s := <-results:
			pending[s.pos] = s
		case <-ctx.Done():
			return nil
		}
	}
}

func (l *Loader) assemble(ctx context.Context, p Position, next int, order []int,
	tokens chan struct{}, results chan *sample, out chan<- *Batch) error {
	pending := map[int]*sample{}
	index := p.Batch
	var b *Batch
	ctxLen := -1
	send := func() bool {
		b.Next = Position{Epoch: p.Epoch, Batch: index + 1, Sample: next}
		l.trim(b)
		select {
		case out <- b:
			index++
			b = nil
			return true
		case <-ctx.Done():
			return false
		}
	}
	for next < len(order) {
		s := awaitSample(ctx, pending, results, next)
		if s == nil {
			return nil
		}
		next++
		<-tokens
		if !s.ok {
			continue
		}
		if b == nil {
			b = l.newBatch(p.Epoch, index)
		}
		if err := l.appendSample(b, s, &ctxLen); err != nil {
			return err
		}
		if len(b.Items) == l.opts.BatchSize && !send() {
			return nil
		}
	}
	if b != nil && !l.opts.DropLast {
		send()
	}
	return nil
}

// appendSample copies a decoded sample into the next row of b, returning its buffers to
// the pools. ctxLen is the token count of the first caption seen (-1 before any); every
// caption's ids must have that length.
func (l *Loader) appendSample(b *Batch, s *sample, ctxLen *int) error {
	i := len(b.Items)
	n := 3 * l.opts.Size * l.opts.Size
	if l.opts.Uint8 {
		copy(b.PixelsU8[i*n:(i+1)*n], s.u8)
		l.u8Pool.Put(&s.u8)
	} else {
		copy(b.Pixels[i*n:(i+1)*n], s.f32)
		l.f32Pool.Put(&s.f32)
	}
	if l.opts.Tokenize != nil {
		if *ctxLen < 0 {
			*ctxLen = len(s.ids)
		}
		if len(s.ids) != *ctxLen {
			return fmt.Errorf("dataset: Tokenize returned %d ids for %q, %d for an earlier caption: ids must be padded to the context length", len(s.ids), s.caption, *ctxLen)
		}
		b.InputIDs = append(b.InputIDs, s.ids...)
	}
	b.Items = append(b.Items, s.idx)
	b.Captions = append(b.Captions, s.caption)
	if s.key != "" {
		b.Keys = append(b.Keys, s.key)
	}
	return nil
}

// shares are this rank's positions [lo, hi) of each batch of an epoch started at
// position start of n (LoaderOptions.World > 1).
func (l *Loader) shares(start, n int) [][2]int {
	var out [][2]int
	for lo := start; lo < n; lo += l.opts.BatchSize {
		hi := min(lo+l.opts.BatchSize, n)
		if hi-lo < l.opts.BatchSize && l.opts.DropLast {
			break
		}
		k := hi - lo
		out = append(out, [2]int{lo + k*l.opts.Rank/l.opts.World, lo + k*(l.opts.Rank+1)/l.opts.World})
	}
	return out
}

// assembleShares is assemble for LoaderOptions.World > 1: one batch per share, its
// readable images in order (possibly fewer than the share, possibly none).
func (l *Loader) assembleShares(ctx context.Context, p Position, start int, shares [][2]int,
	tokens chan struct{}, results chan *sample, out chan<- *Batch) error {
	pending := map[int]*sample{}
	ctxLen := -1
	for j, sh := range shares {
		b := l.newBatch(p.Epoch, p.Batch+j)
		for pos := sh[0]; pos < sh[1]; {
			s := awaitSample(ctx, pending, results, pos)
			if s == nil {
				return nil
			}
			pos++
			<-tokens
			if !s.ok {
				continue
			}
			if err := l.appendSample(b, s, &ctxLen); err != nil {
				return err
			}
		}
		end := min(start+(j+1)*l.opts.BatchSize, len(l.items)) // the global batch's end
		b.Next = Position{Epoch: p.Epoch, Batch: p.Batch + j + 1, Sample: end}
		l.trim(b)
		select {
		case out <- b:
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

func (l *Loader) newBatch(epoch, index int) *Batch {
	n := l.opts.BatchSize * 3 * l.opts.Size * l.opts.Size
	b, _ := l.batchPool.Get().(*Batch)
	if b == nil {
		b = &Batch{}
		if l.opts.Uint8 {
			b.PixelsU8 = make([]uint8, n)
		} else {
			b.Pixels = make([]float32, n)
		}
	}
	b.Epoch, b.Index, b.Size = epoch, index, l.opts.Size
	b.Pixels, b.PixelsU8 = b.Pixels[:cap(b.Pixels)], b.PixelsU8[:cap(b.PixelsU8)]
	b.InputIDs, b.Items, b.Captions, b.Keys = b.InputIDs[:0], b.Items[:0], b.Captions[:0], b.Keys[:0]
	b.release = func(b *Batch) { l.batchPool.Put(b) }
	return b
}

// trim cuts the pixel slices to the batch's images.
func (l *Loader) trim(b *Batch) {
	n := len(b.Items) * 3 * l.opts.Size * l.opts.Size
	if l.opts.Uint8 {
		b.PixelsU8 = b.PixelsU8[:n]
	} else {
		b.Pixels = b.Pixels[:n]
	}
}

// load reads, preprocesses and tokenizes one sample.
// startWorkers starts n decoding goroutines: each loads the jobs it takes from jobs and
// sends the samples to results, until jobs is closed or ctx is done, and calls wg.Done
// when it returns (the caller has added them to wg). The Loader and the StreamLoader run
// their workers with it.
func startWorkers[J any](ctx context.Context, n int, wg *sync.WaitGroup, jobs <-chan J, results chan<- *sample, load func(J) *sample) {
	for range n {
		go func() {
			defer wg.Done()
			for j := range jobs {
				select {
				case results <- load(j):
				case <-ctx.Done():
					return
				}
			}
		}()
	}
}

func (l *Loader) load(epoch, pos, idx int) *sample {
	s := &sample{pos: pos, idx: idx}
	it := &l.items[idx]
	l.badMu.Lock()
	_, known := l.bad[idx]
	l.badMu.Unlock()
	if known {
		return s
	}
	rng := SampleRNG(l.opts.Seed, epoch, idx)
	if len(it.Captions) > 0 {
		c := 0
		if !l.opts.FirstCaption && len(it.Captions) > 1 {
			c = rng.IntN(len(it.Captions))
		}
		s.caption = it.Captions[c]
	}
	size := l.opts.Size
	n := 3 * size * size
	var pix []uint8
	if l.has != nil && l.has[idx] {
		e := l.entries[idx]
		if e.Shard < 0 {
			l.fail(idx, &ImageError{it.Image, fmt.Errorf("%s (recorded by the cache): %s", e.Reason, e.Error)}, e.Reason)
			return s
		}
		buf := l.getU8(n)
		if err := l.cache.ReadInto(e, buf); err == nil {
			l.hits.Add(1)
			pix = buf
			if l.opts.Augment.Enabled() {
				pix = l.opts.Augment.Apply(RGB{W: size, H: size, Pix: buf}, size, rng).Pix
				if &pix[0] != &buf[0] {
					l.u8Pool.Put(&buf)
				}
			}
		} else {
			l.u8Pool.Put(&buf)
		}
	}
	if pix == nil {
		img, err := readItemImage(it, l.opts.MaxPixels)
		if err != nil {
			l.fail(idx, err, imageReason(err))
			return s
		}
		pix = l.pixelsOf(img, rng)
	}
	l.finish(s, pix)
	return s
}

// pixelsOf preprocesses a decoded image to the S x S crop (augmented when enabled).
func (l *Loader) pixelsOf(img RGB, rng *rand.Rand) []uint8 {
	if l.opts.Augment.Enabled() {
		return l.opts.Augment.Apply(img, l.opts.Size, rng).Pix
	}
	return ResizeCropUint8(img, l.opts.Size).Pix
}

// finish stores a sample's S x S crop (normalised unless Uint8), tokenizes its caption
// and marks it readable.
func (l *Loader) finish(s *sample, pix []uint8) {
	n := 3 * l.opts.Size * l.opts.Size
	if l.opts.Uint8 {
		s.u8 = pix
	} else {
		s.f32 = l.getF32(n)
		NormalizeInto(s.f32, pix)
		if cap(pix) == n {
			l.u8Pool.Put(&pix)
		}
	}
	if l.opts.Tokenize != nil {
		s.ids = l.opts.Tokenize(s.caption)
	}
	s.ok = true
}

func (l *Loader) getU8(n int) []uint8 {
	if p, ok := l.u8Pool.Get().(*[]uint8); ok && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]uint8, n)
}

func (l *Loader) getF32(n int) []float32 {
	if p, ok := l.f32Pool.Get().(*[]float32); ok && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]float32, n)
}

// fail records an unreadable image once.
func (l *Loader) fail(idx int, err error, reason Reason) {
	l.badMu.Lock()
	defer l.badMu.Unlock()
	if _, seen := l.bad[idx]; seen {
		return
	}
	l.bad[idx] = err
	l.badOrder = append(l.badOrder, err)
	if l.opts.Report != nil {
		l.opts.Report.AddSkippedImage(reason, itemLabel(l.items[idx]))
	}
}

// Next returns the epoch's next batch, io.EOF after the last one, or ctx's error.
func (l *Loader) Next(ctx context.Context) (*Batch, error) {
	l.mu.Lock()
	r := l.run
	l.mu.Unlock()
	return r.next(ctx)
}

func (l *Loader) stopLocked() { l.run.stop() }

// next waits for r's next batch: io.EOF after the last one, r's error, or ctx's.
func (r *loaderRun) next(ctx context.Context) (*Batch, error) {
	if r == nil {
		return nil, errors.New("dataset: loader not started")
	}
	select {
	case b, ok := <-r.batches:
		if !ok {
			if r.err != nil {
				return nil, r.err
			}
			return nil, io.EOF
		}
		return b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// stop cancels r's goroutines and waits for them; nil is a no-op.
func (r *loaderRun) stop() {
	if r != nil {
		r.cancel()
		r.wg.Wait()
	}
}

// Close stops the workers and waits for them; it is idempotent.
func (l *Loader) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopLocked()
	l.closed = true
	if l.cache != nil {
		l.cache.Close()
	}
	return nil
}

// NormalizeTable is the normalisation as a table of 3·256 float32 values: entry 256·c+v
// is what NormalizeInto writes for value v of channel c. A consumer of Uint8 batches
// (LoaderOptions.Uint8) that looks the crops up in it gets Pixels bit for bit.
func NormalizeTable() []float32 {
	out := make([]float32, 0, 3*256)
	for c := range normLUT {
		out = append(out, normLUT[c][:]...)
	}
	return out
}
