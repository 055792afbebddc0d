package train

// The error rule at train's functions: a Go precondition or a tensor that cannot be
// read is an error naming what is at fault, returned before any tensor work where it
// can be, never a panic or a *torch.Error made up for it.

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"goclip/dataset"
	"goclip/nn"
	"goclip/torch"
)

// wantErr fails unless err is an error whose text holds every part of want.
func wantErr(t *testing.T, what string, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want one containing %q", what, want)
		return
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: error %q does not contain %q", what, err, w)
		}
	}
}

// notTorchError fails when err carries a *torch.Error: a Go precondition is not
// libtorch's failure.
func notTorchError(t *testing.T, what string, err error) {
	t.Helper()
	var te *torch.Error
	if errors.As(err, &te) {
		t.Errorf("%s: the error carries a *torch.Error (%v)", what, te)
	}
}

// freedTensor is a tensor already freed, as a parameter of a model freed too early is.
func freedTensor() *torch.Tensor {
	x := torch.Zeros([]int64{2, 2}, torch.Float32, torch.CPU).Owned()
	x.Free()
	return x
}

// TestParamGroupsBadParameter: a parameter whose tensor is freed or nil is an error
// naming it, not a panic.
func TestParamGroupsBadParameter(t *testing.T) {
	good := torch.Zeros([]int64{3, 3}, torch.Float32, torch.CPU).SetRequiresGrad(true).Owned()
	defer good.Free()
	for _, bad := range []*torch.Tensor{freedTensor(), nil} {
		params := []nn.Named{{Name: "fc.weight", T: good}, {Name: "broken.weight", T: bad}}
		decay, noDecay, err := ParamGroups(params)
		wantErr(t, "ParamGroups with a freed parameter", err, "broken.weight", "nil or freed tensor")
		if decay != nil || noDecay != nil {
			t.Errorf("ParamGroups failed but returned groups %v, %v", decay, noDecay)
		}
	}
	decay, noDecay, err := ParamGroups([]nn.Named{{Name: "fc.weight", T: good}})
	if err != nil || len(decay) != 1 || len(noDecay) != 0 {
		t.Errorf("ParamGroups of one matrix: %d/%d, %v; want it in the decay group", len(decay), len(noDecay), err)
	}
}

// TestNewDataParallelErrors: a freed parameter is an error naming it, and a nil process
// group an error, where the helper would otherwise panic on first use.
func TestNewDataParallelErrors(t *testing.T) {
	good := torch.Zeros([]int64{3}, torch.Float32, torch.CPU).Owned()
	defer good.Free()
	dp, err := NewDataParallel(onePG(t), []nn.Named{{Name: "ok", T: good}, {Name: "text_projection.weight", T: freedTensor()}})
	wantErr(t, "NewDataParallel with a freed parameter", err, "text_projection.weight", "nil or freed tensor")
	if dp != nil {
		t.Error("NewDataParallel failed but returned a helper")
	}
	_, err = NewDataParallel(nil, []nn.Named{{Name: "ok", T: good}})
	wantErr(t, "NewDataParallel without a process group", err, "no process group")
}

// onePG is a Gloo process group of one rank on 127.0.0.1, closed with the test.
func onePG(t *testing.T) *torch.ProcessGroup {
	t.Helper()
	if !torch.HasBackend("gloo") {
		if os.Getenv("CI") == "true" {
			t.Fatal("the shim was built without Gloo: install libgloo-dev and rebuild it")
		}
		t.Skip("the shim was built without Gloo (install libgloo-dev and rebuild it)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	pg, err := torch.NewProcessGroup("gloo", 0, 1, "127.0.0.1", port, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pg.Close)
	return pg
}

// TestStepBatchPreconditions: a rank's share of fewer samples than --grad-accum, and ids
// that do not make the batch's rows, are errors naming the rank, the counts and the
// batch, returned before the step makes any tensor.
func TestStepBatchPreconditions(t *testing.T) {
	f := synthData(t, 120, "base")
	m := newModel(t, microConfig(t, f.tok), 1)
	tr, err := newTrainer(Job{Model: m}, Options{GradAccum: 4, BatchSize: 8, HostInput: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.free()
	ctx := int(m.Config.Text.MaxPositionEmbeddings)
	s := int(m.Config.Vision.ImageSize)
	batch := func(n, idsPerRow int) *dataset.Batch {
		return &dataset.Batch{Epoch: 1, Index: 2, Size: s, Pixels: make([]float32, n*3*s*s),
			InputIDs: make([]int64, n*idsPerRow), Items: make([]int, n)}
	}
	base := torch.Live()

	tr.dp, err = NewDataParallel(onePG(t), tr.allParams())
	if err != nil {
		t.Fatal(err)
	}
	_, err = tr.stepBatch(batch(3, ctx), 1e-3)
	wantErr(t, "a share of 3 samples under --grad-accum 4", err, "rank 0 holds 3 samples", "--grad-accum 4")
	notTorchError(t, "a share of 3 samples under --grad-accum 4", err)

	tr.dp = nil
	b := batch(4, ctx)
	b.InputIDs = b.InputIDs[:len(b.InputIDs)-1]
	_, err = tr.stepBatch(b, 1e-3)
	wantErr(t, "ids one short of 4 rows", err, "batch 2 of epoch 1", "ids do not make 4 rows")
	notTorchError(t, "ids one short of 4 rows", err)
	if d := torch.Live() - base; d != 0 {
		t.Errorf("the refused steps left %d tensors", d)
	}
}

// TestFeedStartErrors: a batch without the Uint8 pixels the feed copies, or whose ids do
// not make its rows, is an error naming the batch, with no tensor left behind.
func TestFeedStartErrors(t *testing.T) {
	f := synthData(t, 120, "base")
	m := newModel(t, microConfig(t, f.tok), 1)
	fd := &feed{model: m, dev: torch.CPU}
	ctx := int(m.Config.Text.MaxPositionEmbeddings)
	s := 16
	base := torch.Live()
	_, err := fd.start(&dataset.Batch{Index: 5, Size: s, Pixels: make([]float32, 2*3*s*s), InputIDs: make([]int64, 2*ctx), Items: make([]int, 2)})
	wantErr(t, "a float32 batch", err, "batch 5", "the loader must serve Uint8 batches")
	notTorchError(t, "a float32 batch", err)
	_, err = fd.start(&dataset.Batch{Index: 6, Size: s, PixelsU8: make([]uint8, 2*3*s*s), InputIDs: make([]int64, 2*ctx+1), Items: make([]int, 2)})
	wantErr(t, "ids that do not make 2 rows", err, "batch 6", "ids do not make 2 rows")
	notTorchError(t, "ids that do not make 2 rows", err)
	if d := torch.Live() - base; d != 0 {
		t.Errorf("the refused batches left %d tensors", d)
	}
}

// TestLoadCheckpointShape: a checkpoint whose tensor has another shape than the model's
// is an error naming the tensor and both shapes, and nothing is copied into the model.
func TestLoadCheckpointShape(t *testing.T) {
	f := synthData(t, 120, "base")
	cfg := microConfig(t, f.tok)
	src := newModel(t, cfg, 1)
	cfg.ProjectionDim, cfg.Vision.ProjectionDim, cfg.Text.ProjectionDim = 8, 8, 8
	dst := newModel(t, cfg, 2)
	path := filepath.Join(t.TempDir(), "last.pt")
	save, err := newTrainer(Job{Model: src}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer save.free()
	save.sched = Schedule{Kind: Constant, Base: 1e-3, Total: 10}
	if err := save.saveCheckpoint(path, checkpointState{bestStep: -1}); err != nil {
		t.Fatal(err)
	}
	load, err := newTrainer(Job{Model: dst}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer load.free()
	before := dst.VisionModel.Embeddings.ClassEmbedding.Float64s()
	_, err = load.loadCheckpoint(path)
	wantErr(t, "a checkpoint of projection 16 into a model of 8", err, path, "visual_projection.weight", "shape [16 32]", "the model has [8 32]")
	notTorchError(t, "a checkpoint of projection 16 into a model of 8", err)
	if after := dst.VisionModel.Embeddings.ClassEmbedding.Float64s(); !slices.Equal(after, before) {
		t.Error("a refused checkpoint changed the model's class embedding")
	}
}

// TestMetricsUnreadableScale: a logit scale or SigLIP bias that cannot be read ends the
// logging window with an error naming it (it used to be written as null).
func TestSyncUnreadableScale(t *testing.T) {
	f := synthData(t, 120, "base")
	m := newModel(t, microConfig(t, f.tok), 1)
	tr, err := newTrainer(Job{Model: m}, Options{Loss: LossSigLIP})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.free()
	pend := func() { // one step's stats, as stepInScope leaves them: loss 2, norm 1, applied
		tr.pending = append(tr.pending, pendingStep{stats: torch.FromFloat64([]float64{2, 1, 0, 1}, nStats), step: 1, lr: 1e-3})
	}
	pend()
	if err := tr.sync(); err != nil {
		t.Fatalf("a readable scale and bias: %v", err)
	}
	tr.bias.Free()
	pend()
	wantErr(t, "a freed logit bias", tr.sync(), "logit_bias", "nil or freed tensor")
	m.LogitScale.Free()
	pend()
	wantErr(t, "a freed logit scale", tr.sync(), "logit_scale", "nil or freed tensor")
	if len(tr.pending) != 0 {
		t.Errorf("%d steps still pending after a failed read", len(tr.pending))
	}
}
