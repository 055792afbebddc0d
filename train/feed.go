package train

// The training input path on CUDA (Options.HostInput turns it off): the loader serves
// uint8 crops, a quarter of the bytes of normalised float32 ones; the feed starts each
// batch's copy to the device one step ahead, from pinned memory on the device's copy
// stream (torch.CopyAsync), and the step normalises the crops on the device with the
// loader's own table, so the pixels, and so the losses, are bit for bit those of the host
// path. A CPU run keeps the host path (the loader's workers normalise 32 crops of 224 in
// 2.4 ms on this project's 2-core machine, the table lookup in the step takes 88 ms);
// tests run the feed on the CPU with feedOnCPU.

import (
	"context"
	"fmt"

	"goclip/clip"
	"goclip/dataset"
	"goclip/torch"
)

// feedOnCPU makes CPU runs take the device input path too (tests: its losses against
// the host path's, bit for bit).
var feedOnCPU = false

// feed is a dataset.BatchSource over a loader built with LoaderOptions.Uint8: Next
// returns the loader's batches unchanged. inputs gives the step the device tensors of
// the batch Next returned last (valid until the next call of Next, StartAt or Close),
// and the step calls readAhead once its forward is queued: the next batch's host copy
// into pinned memory and the start of its device copy then overlap the device's work
// on this step, and its next Next finds the batch on its way.
type feed struct {
	src   dataset.BatchSource
	model *clip.Model
	dev   torch.Device
	lut   *torch.Tensor // [3·256] float32 on dev: dataset.NormalizeTable
	offs  *torch.Tensor // [3] int64 on dev: 0, 256, 512, channel c's first row of lut

	cur, ahead *feedBatch      // the batch Next returned last, the one whose copy runs ahead
	aheadErr   error           // what the loader returned instead of an ahead batch
	ctx        context.Context // Next's, for readAhead
}

// feedBatch is one batch and its tensors on the device.
type feedBatch struct {
	b    *dataset.Batch
	pix  *torch.Tensor // [B, S, S, 3] uint8 on the device, HWC crops
	ids  *torch.Tensor // [B, L] int64 on the device (trimmed by Model.TextIDs)
	copy *torch.Copy   // the copy in flight (nil on the CPU, or once waited on)
}

// newFeed wraps src (a loader serving Uint8 batches) for m's device.
func newFeed(src dataset.BatchSource, m *clip.Model) (f *feed, err error) {
	f = &feed{src: src, model: m, dev: m.Device()}
	err = torch.Try(func() {
		torch.WithScope(func() {
			f.lut = torch.FromFloat32(dataset.NormalizeTable(), 3*256).ToDevice(f.dev, false).Owned() // [768]
			f.offs = torch.FromInt64([]int64{0, 256, 512}, 3).ToDevice(f.dev, false).Owned()          // [3]
		})
	})
	if err != nil {
		f.lut.Free()
		f.offs.Free()
		return nil, fmt.Errorf("train: preparing the device input: %w", err)
	}
	return f, nil
}

// Len is the loader's number of batches an epoch.
func (f *feed) Len() int { return f.src.Len() }

// StartAt drops the batches in hand (the ahead one goes back to the loader unused) and
// starts the loader at p.
func (f *feed) StartAt(p dataset.Position) error {
	f.drop()
	return f.src.StartAt(p)
}

// Next returns the loader's next batch, whose copy started during the previous step
// (readAhead), or starts it now (an epoch's first batch). An error of the loader met
// while reading ahead is returned here.
func (f *feed) Next(ctx context.Context) (*dataset.Batch, error) {
	f.cur.free()
	f.cur = nil
	f.ctx = ctx
	fb := f.ahead
	f.ahead = nil
	if fb == nil {
		if err := f.aheadErr; err != nil {
			f.aheadErr = nil
			return nil, err
		}
		b, err := f.src.Next(ctx)
		if err != nil {
			return nil, err
		}
		if fb, err = f.start(b); err != nil {
			return nil, err
		}
	}
	f.cur = fb
	return fb.b, nil
}

// readAhead takes the loader's next batch and starts its copy, unless that is done; the
// loader's error (io.EOF at an epoch's end) waits for the next Next.
func (f *feed) readAhead() {
	if f.ahead != nil || f.aheadErr != nil || f.ctx == nil {
		return
	}
	b, err := f.src.Next(f.ctx)
	if err == nil {
		f.ahead, err = f.start(b)
	}
	f.aheadErr = err
}

// Close frees the tensors and closes the loader.
func (f *feed) Close() error {
	f.drop()
	f.lut.Free()
	f.offs.Free()
	return f.src.Close()
}

func (f *feed) drop() {
	f.cur.free()
	if f.ahead != nil {
		f.ahead.b.Release()
		f.ahead.free()
	}
	f.cur, f.ahead, f.aheadErr, f.ctx = nil, nil, nil, nil
}

// start makes b's tensors on the device: on CUDA a copy from pinned memory on the copy
// stream, which the host does not wait for.
func (f *feed) start(b *dataset.Batch) (*feedBatch, error) {
	n, s := int64(b.Len()), int64(b.Size)
	if len(b.PixelsU8) != int(n*s*s*3) {
		return nil, fmt.Errorf("batch %d holds %d bytes of pixels for %d images of %dx%d: the loader must serve Uint8 batches", b.Index, len(b.PixelsU8), n, s, s)
	}
	cut, l, err := f.model.TextIDs(b.InputIDs, int(n))
	if err != nil {
		return nil, fmt.Errorf("batch %d: %w", b.Index, err)
	}
	fb := &feedBatch{b: b}
	err = torch.Try(func() {
		torch.WithScope(func() {
			ids := torch.FromInt64(cut, n, int64(l)) // [B, L]
			if !f.dev.IsCUDA() {
				fb.pix, fb.ids = torch.FromUint8(b.PixelsU8, n, s, s, 3).Owned(), ids.Owned() // [B, S, S, 3]
				return
			}
			pix := torch.PinnedUint8(b.PixelsU8, n, s, s, 3) // [B, S, S, 3], page-locked
			outs, c := torch.CopyAsync(f.dev, pix, ids.PinMemory())
			fb.pix, fb.ids, fb.copy = outs[0].Owned(), outs[1].Owned(), c
		})
	})
	if err != nil {
		fb.free()
		return nil, fmt.Errorf("batch %d: copying to %s: %w", b.Index, f.dev, err)
	}
	return fb, nil
}

// free releases fb's tensors (nil: nothing).
func (fb *feedBatch) free() {
	if fb == nil {
		return
	}
	fb.copy.Free()
	fb.pix.Free()
	fb.ids.Free()
}

// holds reports whether b is the batch Next returned last.
func (f *feed) holds(b *dataset.Batch) bool { return f.cur != nil && f.cur.b == b }

// inputs are the step's input tensors for the batch Next returned last, made in the
// calling (the step's) scope: the current stream waits for the copy, then the crops
// are normalised by table lookup.
func (f *feed) inputs() batchTensors {
	fb := f.cur
	fb.copy.Wait(fb.pix, fb.ids)
	fb.copy = nil
	n, s := fb.pix.Size(0), fb.pix.Size(1)
	idx := fb.pix.To(torch.Int64).Add(f.offs)                     // [B, S, S, 3], rows of lut
	v := f.lut.IndexSelect(0, idx.Flatten(0, -1))                 // [B·S·S·3]
	pixels := v.View(n, s, s, 3).Permute(0, 3, 1, 2).Contiguous() // [B, 3, S, S]
	return batchTensors{pixels: pixels, ids: fb.ids}
}
