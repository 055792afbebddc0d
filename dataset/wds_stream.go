package dataset

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
)

// BatchSource is what a training loop reads batches from: a Loader over items, or a
// StreamLoader over webdataset shards.
type BatchSource interface {
	Len() int                                 // batches of an epoch
	StartAt(p Position) error                 // begin an epoch at p (a Batch's Next)
	Next(ctx context.Context) (*Batch, error) // the next batch; io.EOF after the epoch's last
	Close() error
}

var (
	_ BatchSource = (*Loader)(nil)
	_ BatchSource = (*StreamLoader)(nil)
)

// StreamLoader serves batches from webdataset shards, streaming: nothing is read
// before Start, and the shards are read as the batches are needed.
//
// The stream of an epoch: the shards in an order drawn from (Seed, epoch) (their
// listed order without LoaderOptions.Shuffle), of which rank r of World takes every
// World-th from the r-th (with Resampled, each rank instead draws shards with
// replacement from (Seed, epoch, rank)); one reader walks the rank's shards reading
// tar headers only and groups members into samples, which pass through a shuffle
// buffer of ShuffleBuffer samples (training) and are then read and decoded by the
// Workers goroutines, each sample by one of them. The stream, and so the batches,
// depend only on the shards, the options and (Seed, epoch, rank), never on Workers or
// timing, and every sample of a rank's shards is decoded once.
//
// An epoch is Shards.EpochSamples() / BatchSize batches. One process: bad samples are
// replaced by the next ones (batches stay full) and the epoch ends early when the
// shards run out. World > 1: each batch holds this rank's share of the global batch
// (the rows [n·r/World, n·(r+1)/World) of its n = BatchSize), read from the rank's
// own stream; bad samples are left out of the share (it may be short), and a rank
// whose shards run out before the epoch's last batch reads them again in a new order,
// so that every rank serves the same number of batches.
//
// A Batch's Next is the position to resume from: the epoch, the batches served and
// the samples of the stream consumed (with World > 1, the rank's count follows from
// the batches: each consumes exactly its share). StartAt replays the stream's headers
// up to that point without reading any sample's data, so a resumed run sees exactly
// the samples it would have seen.
//
// A sample's caption is its txt member (or json field); when its json member also
// lists all of the image's captions (goclip shard writes "captions"), one of them is
// drawn per sample and epoch, as Loader draws (LoaderOptions.FirstCaption: the first).
//
// Bad samples (no image, no caption, a caption that is not UTF-8, a truncated or
// corrupt image) are counted once each, by "SHARD.tar:KEY", in LoaderOptions.Report; a
// corrupt or unreadable shard is read up to the damage, counted (CorruptShard) and
// the stream goes on with the next shard.
type StreamLoader struct {
	sh       *Shards
	base     *Loader // batch buffers and preprocessing
	opts     LoaderOptions
	perEpoch int
	local    int // samples of each batch this rank consumes

	badMu    sync.Mutex
	bad      map[string]bool
	badOrder []error
	corrupt  map[int]bool

	mu     sync.Mutex
	run    *loaderRun
	closed bool
}

// NewStreamLoader makes a loader over sh; LoaderOptions.CacheDir is ignored.
func NewStreamLoader(sh *Shards, opts LoaderOptions) (*StreamLoader, error) {
	if sh == nil || len(sh.Paths) == 0 {
		return nil, errors.New("dataset: no shards")
	}
	opts.CacheDir = ""
	base := NewLoader(nil, opts)
	opts = base.opts
	if opts.World < 1 {
		opts.World, opts.Rank = 1, 0
	}
	n, err := sh.EpochSamples()
	if err != nil {
		return nil, err
	}
	if opts.World > 1 && !sh.Resampled && len(sh.Paths) < opts.World {
		return nil, fmt.Errorf("dataset: %d shards for %d ranks: every rank needs a shard of its own (or use --dataset-resampled)", len(sh.Paths), opts.World)
	}
	b := opts.BatchSize
	l := &StreamLoader{sh: sh, base: base, opts: opts, bad: map[string]bool{}, corrupt: map[int]bool{},
		local: b*(opts.Rank+1)/opts.World - b*opts.Rank/opts.World}
	l.perEpoch = n / b
	if !opts.DropLast && n%b != 0 {
		l.perEpoch++
	}
	if opts.World > 1 && l.local == 0 {
		return nil, fmt.Errorf("dataset: a batch of %d over %d ranks leaves rank %d no sample", b, opts.World, opts.Rank)
	}
	return l, nil
}

// Len is the number of batches of an epoch.
func (l *StreamLoader) Len() int { return l.perEpoch }

// Skipped is the number of distinct bad samples and corrupt shards met so far, with
// their errors.
func (l *StreamLoader) Skipped() (int, []error) {
	l.badMu.Lock()
	defer l.badMu.Unlock()
	return len(l.badOrder), append([]error(nil), l.badOrder...)
}

// Start begins epoch at batch skipBatches (exact when no sample was bad before it).
func (l *StreamLoader) Start(epoch, skipBatches int) error {
	return l.StartAt(Position{Epoch: epoch, Batch: skipBatches, Sample: skipBatches * l.local})
}

type streamJob struct {
	pos int
	s   shardSample
}

// StartAt begins the epoch at p, a Batch's Next.
func (l *StreamLoader) StartAt(p Position) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("dataset: loader is closed")
	}
	l.stopLocked()
	consumed := max(p.Sample, 0)
	if l.opts.World > 1 {
		consumed = max(p.Batch, 0) * l.local
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &loaderRun{cancel: cancel, batches: make(chan *Batch, l.opts.Prefetch-1)}
	window := 4*l.opts.Workers + 4
	tokens := make(chan struct{}, window)
	jobs := make(chan streamJob)
	results := make(chan *sample, window)
	end := make(chan int, 1)
	q := l.sequencer(p.Epoch)

	r.wg.Add(2 + l.opts.Workers)
	go func() { // dispatcher: the stream in order
		defer r.wg.Done()
		defer close(jobs)
		defer q.close()
		for i := 0; i < consumed; i++ { // replay what was consumed (headers only)
			if _, ok := q.next(); !ok {
				end <- i
				return
			}
			if ctx.Err() != nil {
				return
			}
		}
		pos := consumed
		limit := -1
		if l.opts.World > 1 {
			limit = consumed + max(l.perEpoch-p.Batch, 0)*l.local
		}
		for limit < 0 || pos < limit {
			s, ok := q.next()
			if !ok {
				break
			}
			select {
			case tokens <- struct{}{}:
			case <-ctx.Done():
				return
			}
			select {
			case jobs <- streamJob{pos, s}:
			case <-ctx.Done():
				return
			}
			pos++
		}
		end <- pos
	}()
	startWorkers(ctx, l.opts.Workers, &r.wg, jobs, results, func(j streamJob) *sample { return l.load(p.Epoch, j.pos, j.s) })
	go func() { // assembler
		defer r.wg.Done()
		defer close(r.batches)
		r.err = l.assemble(ctx, p, consumed, tokens, results, end, r.batches)
	}()
	l.run = r
	return nil
}

func (l *StreamLoader) assemble(ctx context.Context, p Position, next int, tokens chan struct{},
	results chan *sample, endCh chan int, out chan<- *Batch) error {
	pending := map[int]*sample{}
	end := -1
	// await returns the sample at pos; nil with ended at the stream's end, nil
	// without when ctx is cancelled.
	await := func(pos int) (s *sample, ended bool) {
		for {
			if s, ok := pending[pos]; ok {
				delete(pending, pos)
				return s, false
			}
			if end >= 0 && pos >= end {
				return nil, true
			}
			select {
			case s := <-results:
				pending[s.pos] = s
			case end = <-endCh:
			case <-ctx.Done():
				return nil, false
			}
		}
	}
	send := func(b *Batch) bool {
		l.base.trim(b)
		select {
		case out <- b:
			return true
		case <-ctx.Done():
			return false
		}
	}
	ctxLen := -1
	for index := p.Batch; index < l.perEpoch; index++ {
		b := l.base.newBatch(p.Epoch, index)
		want := l.opts.BatchSize
		if l.opts.World > 1 {
			want = l.local
		}
		taken := 0
		for (l.opts.World > 1 && taken < want) || (l.opts.World <= 1 && len(b.Items) < want) {
			s, ended := await(next)
			if s == nil {
				if !ended {
					return nil
				}
				if l.opts.World > 1 {
					return fmt.Errorf("dataset: rank %d: the shards gave no sample for batch %d of epoch %d", l.opts.Rank, index, p.Epoch)
				}
				if len(b.Items) > 0 && !l.opts.DropLast {
					b.Next = Position{Epoch: p.Epoch, Batch: index + 1, Sample: next}
					send(b)
				}
				return nil
			}
			next++
			taken++
			<-tokens
			if !s.ok {
				continue
			}
			if err := l.base.appendSample(b, s, &ctxLen); err != nil {
				return err
			}
		}
		b.Next = Position{Epoch: p.Epoch, Batch: index + 1, Sample: next}
		if l.opts.World > 1 {
			b.Next.Sample = (index + 1) * l.opts.BatchSize
		}
		if !send(b) {
			return nil
		}
	}
	return nil
}

// load reads, decodes and preprocesses one sample of the stream.
func (l *StreamLoader) load(epoch, pos int, ss shardSample) *sample {
	shard := l.sh.Paths[ss.shard]
	label := filepath.Base(shard) + ":" + ss.key
	s := &sample{pos: pos, idx: pos, key: label}
	id := shard + "\x00" + ss.key
	l.badMu.Lock()
	known := l.bad[id]
	l.badMu.Unlock()
	if known {
		return s
	}
	f, err := os.Open(shard)
	if err != nil {
		l.fail(id, label, UnreadableImage, err)
		return s
	}
	defer f.Close()
	caption, why, err := sampleCaption(f, ss, l.sh.CaptionKey)
	if err != nil {
		l.fail(id, label, why, fmt.Errorf("%s: %w", label, err))
		return s
	}
	if ss.image.name == "" {
		l.fail(id, label, MissingImage, fmt.Errorf("%s: no image member (%v)", label, imageExts))
		return s
	}
	data, err := readMember(f, ss.image)
	if err != nil {
		l.fail(id, label, UnreadableImage, &ImageError{shard + ":" + ss.image.name, err})
		return s
	}
	img, err := DecodeImage(data, shard+":"+ss.image.name, l.opts.MaxPixels)
	if err != nil {
		l.fail(id, label, imageReason(err), err)
		return s
	}
	rng := SampleRNG(l.opts.Seed, epoch, pos)
	s.caption = caption
	if !l.opts.FirstCaption {
		if all := allCaptions(f, ss, caption); len(all) > 1 { // one per epoch, as Loader draws
			s.caption = all[rng.IntN(len(all))]
		}
	}
	l.base.finish(s, l.base.pixelsOf(img, rng))
	return s
}

// fail records a bad sample once.
func (l *StreamLoader) fail(id, label string, reason Reason, err error) {
	l.badMu.Lock()
	defer l.badMu.Unlock()
	if l.bad[id] {
		return
	}
	l.bad[id] = true
	l.badOrder = append(l.badOrder, err)
	if l.opts.Report != nil {
		l.opts.Report.AddSkipped(reason, Place{Name: label})
	}
}

// shardFailed records a corrupt or unreadable shard once.
func (l *StreamLoader) shardFailed(shard int, err error) {
	l.badMu.Lock()
	defer l.badMu.Unlock()
	if l.corrupt[shard] {
		return
	}
	l.corrupt[shard] = true
	p := l.sh.Paths[shard]
	l.badOrder = append(l.badOrder, fmt.Errorf("shard %s: %w", p, err))
	if l.opts.Report != nil {
		l.opts.Report.AddSkipped(CorruptShard, Place{Name: fmt.Sprintf("%s (%v)", p, err)})
	}
}

// Next returns the epoch's next batch, io.EOF after the last one, or ctx's error.
func (l *StreamLoader) Next(ctx context.Context) (*Batch, error) {
	l.mu.Lock()
	r := l.run
	l.mu.Unlock()
	return r.next(ctx)
}

func (l *StreamLoader) stopLocked() { l.run.stop() }

// Close stops the goroutines and waits for them; it is idempotent.
func (l *StreamLoader) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopLocked()
	l.closed = true
	return nil
}

// sequencer is one rank's stream of samples for an epoch: shards in order, their
// samples through the shuffle buffer. It reads headers only.
type sequencer struct {
	l       *StreamLoader
	epoch   int
	order   []int // this pass's shards
	at      int   // into order
	pass    int
	inPass  int // samples of this pass so far
	draw    *rand.Rand
	drawn   int // shards drawn in a row without a sample (Resampled)
	sc      *tarScanner
	buf     []shardSample
	bufRNG  *rand.Rand
	bufSize int
	ended   bool
}

func (l *StreamLoader) sequencer(epoch int) *sequencer {
	seed := uint64(l.opts.Seed)
	q := &sequencer{l: l, epoch: epoch}
	if l.opts.Shuffle && l.sh.ShuffleBuffer > 1 {
		q.bufSize = l.sh.ShuffleBuffer
		q.bufRNG = rand.New(rand.NewPCG(seedMix(seed^0xb0ff), seedMix(uint64(epoch)<<16^uint64(l.opts.Rank))))
	}
	if l.sh.Resampled {
		q.draw = rand.New(rand.NewPCG(seedMix(seed^0x5a3d), seedMix(uint64(epoch)<<16^uint64(l.opts.Rank))))
	} else {
		q.order = l.shardOrder(epoch)
	}
	return q
}

// shardOrder is this rank's shards of an epoch: every World-th of the epoch's order.
func (l *StreamLoader) shardOrder(epoch int) []int {
	n := len(l.sh.Paths)
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	if l.opts.Shuffle {
		rng := rand.New(rand.NewPCG(seedMix(uint64(l.opts.Seed)^0x54a2d), seedMix(uint64(epoch))))
		rng.Shuffle(n, func(i, j int) { all[i], all[j] = all[j], all[i] })
	}
	var out []int
	for i := l.opts.Rank; i < n; i += l.opts.World {
		out = append(out, all[i])
	}
	return out
}

// nextShard is the index of the next shard to read; false at the end of the pass
// (Resampled: when no shard gives a sample).
func (q *sequencer) nextShard() (int, bool) {
	n := len(q.l.sh.Paths)
	if q.draw != nil {
		if q.drawn > 2*n+8 {
			return 0, false
		}
		q.drawn++
		return q.draw.IntN(n), true
	}
	if q.at >= len(q.order) {
		return 0, false
	}
	q.at++
	return q.order[q.at-1], true
}

// newPass starts reading the rank's shards again, in a new order (World > 1, when
// they ran out before the epoch's last batch); false when the last pass gave nothing.
func (q *sequencer) newPass() bool {
	if q.draw != nil || q.l.opts.World <= 1 || q.inPass == 0 {
		return false
	}
	q.pass++
	rng := rand.New(rand.NewPCG(seedMix(uint64(q.l.opts.Seed)^0x9a55), seedMix(uint64(q.epoch)<<20^uint64(q.pass)<<8^uint64(q.l.opts.Rank))))
	rng.Shuffle(len(q.order), func(i, j int) { q.order[i], q.order[j] = q.order[j], q.order[i] })
	q.at, q.inPass, q.ended = 0, 0, false
	return true
}

// raw is the next sample of the shards, before the shuffle buffer.
func (q *sequencer) raw() (shardSample, bool) {
	for !q.ended {
		if q.sc != nil {
			if s, ok := q.sc.next(); ok {
				q.inPass++
				q.drawn = 0
				return s, true
			}
			if q.sc.err != nil {
				q.l.shardFailed(q.sc.shard, q.sc.err)
			}
			q.sc.close()
			q.sc = nil
		}
		i, ok := q.nextShard()
		if !ok {
			q.ended = true
			break
		}
		sc, err := openScanner(q.l.sh.Paths[i], i)
		if err != nil {
			q.l.shardFailed(i, err)
			continue
		}
		q.sc = sc
	}
	return shardSample{}, false
}

// next is the stream's next sample. The shuffle buffer drains at the end of a pass
// before the next pass begins, so that a pass holds each sample once.
func (q *sequencer) next() (shardSample, bool) {
	if q.bufSize <= 1 {
		for {
			if s, ok := q.raw(); ok {
				return s, true
			}
			if !q.newPass() {
				return shardSample{}, false
			}
		}
	}
	for {
		for len(q.buf) < q.bufSize {
			s, ok := q.raw()
			if !ok {
				break
			}
			q.buf = append(q.buf, s)
		}
		if len(q.buf) > 0 {
			break
		}
		if !q.newPass() {
			return shardSample{}, false
		}
	}
	j := q.bufRNG.IntN(len(q.buf))
	s := q.buf[j]
	last := len(q.buf) - 1
	q.buf[j] = q.buf[last]
	q.buf = q.buf[:last]
	return s, true
}

func (q *sequencer) close() {
	if q.sc != nil {
		q.sc.close()
		q.sc = nil
	}
}
