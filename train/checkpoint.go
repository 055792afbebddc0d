package train

// The resumable checkpoint, checkpoints/last.pt (and best.pt): one torch.save object,
// written atomically by serialize.WritePTObject, that torch.load(weights_only=True)
// opens in Python:
//
//	{"format": "goclip-train/1",
//	 "model" | "adapter": {name: tensor},       trained tensors (HF keys for "model")
//	 "optimizer": {"step": int, "groups": [{"weight_decay": float, "names": [str],
//	               "exp_avg": [tensor], "exp_avg_sq": [tensor]}]},
//	 "schedule": {"step": int, "total": int, "lr": float},
//	 "scaler": None | {"scale": float, "good": int, "skipped": int},
//	 "rng": {"torch_cpu": uint8 tensor, "torch_cuda": uint8 tensor (CUDA runs),
//	         "data_seed": int},
//	 "data": {"epoch": int, "batch": int, "sample": int},
//	 "best_val_loss": float, "best_step": int (-1: no evaluation yet), "skipped": int}

import (
	"errors"
	"fmt"
	"math"
	"os"
	"slices"

	"goclip/dataset"
	"goclip/internal/rundir"
	"goclip/nn"
	"goclip/torch"
	"goclip/torch/serialize"
)

// CheckpointFormat tags the checkpoints this package writes.
const CheckpointFormat = "goclip-train/1"

// Checkpoint file names under RUN/checkpoints/ (see RunDir).
const (
	LastCheckpoint = rundir.LastFile
	BestCheckpoint = rundir.BestFile
)

// checkpointState is what a checkpoint restores beyond tensors.
type checkpointState struct {
	step     int // batches consumed: the schedule's position
	pos      dataset.Position
	best     float64
	seed     uint64
	skipped  int
	bestStep int
}

// rawTensors copies named tensors to the host; a failure names the tensor.
func rawTensors(ps []nn.Named) (map[string]serialize.RawTensor, error) {
	out := make(map[string]serialize.RawTensor, len(ps))
	for _, p := range ps {
		if err := torch.Try(func() { out[p.Name] = p.T.Raw() }); err != nil {
			return nil, fmt.Errorf("%s: %w", p.Name, err)
		}
	}
	return out, nil
}

func rawList(ts []*torch.Tensor) ([]any, error) {
	out := make([]any, len(ts))
	err := torch.Try(func() {
		for i, t := range ts {
			out[i] = t.Raw()
		}
	})
	return out, err
}

// saveCheckpoint writes the trainer's whole state to path, atomically.
func (t *trainer) saveCheckpoint(path string, st checkpointState) error {
	weights, err := rawTensors(t.params)
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", path, err)
	}
	var groups []any
	for gi, g := range t.opt.Groups {
		m, err := rawList(g.ExpAvg)
		if err != nil {
			return fmt.Errorf("checkpoint %s: %w", path, err)
		}
		v, err := rawList(g.ExpAvgSq)
		if err != nil {
			return fmt.Errorf("checkpoint %s: %w", path, err)
		}
		names := make([]string, len(t.groups[gi]))
		for i, p := range t.groups[gi] {
			names[i] = p.Name
		}
		groups = append(groups, map[string]any{
			"weight_decay": g.WeightDecay, "names": names, "exp_avg": m, "exp_avg_sq": v,
		})
	}
	var scaler any
	if t.scaler != nil {
		scaler = map[string]any{"scale": t.scaler.Scale, "good": t.scaler.Good, "skipped": t.scaler.Skipped}
	}
	rng := map[string]any{"data_seed": int64(st.seed)}
	if err := torch.Try(func() {
		s := torch.RNGState(torch.CPU)
		rng["torch_cpu"] = s.Raw()
		s.Free()
		if dev := t.model.Device(); dev.Type == torch.CUDADevice {
			s := torch.RNGState(dev)
			rng["torch_cuda"] = s.Raw()
			s.Free()
		}
	}); err != nil {
		return fmt.Errorf("checkpoint %s: %w", path, err)
	}
	obj := map[string]any{
		"format":        CheckpointFormat,
		t.job.key():     weights,
		"optimizer":     map[string]any{"step": t.opt.Steps(), "groups": groups},
		"schedule":      map[string]any{"step": st.step, "total": t.sched.Total, "lr": t.sched.At(st.step)},
		"scaler":        scaler,
		"rng":           rng,
		"data":          map[string]any{"epoch": st.pos.Epoch, "batch": st.pos.Batch, "sample": st.pos.Sample},
		"best_val_loss": st.best,
		"best_step":     st.bestStep,
		"skipped":       st.skipped,
	}
	if err := os.MkdirAll(dirOf(path), 0o755); err != nil {
		return err
	}
	return serialize.WritePTObject(path, obj)
}

// ckptReader reads typed fields of a checkpoint object, remembering the first error.
type ckptReader struct {
	path string
	err  error
}

func (r *ckptReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("checkpoint %s: "+format, append([]any{r.path}, args...)...)
	}
}

func (r *ckptReader) dict(obj any, key string) map[string]any {
	m, ok := obj.(map[string]any)
	if !ok {
		r.fail("not a dict where %q was expected", key)
		return nil
	}
	v, ok := m[key].(map[string]any)
	if !ok {
		r.fail("%q is missing or not a dict", key)
	}
	return v
}

func (r *ckptReader) int(m map[string]any, key string) int64 {
	v, ok := m[key].(int64)
	if !ok {
		r.fail("%q is missing or not an int", key)
	}
	return v
}

// count reads an int that must be at least lo, named what in errors.
func (r *ckptReader) count(m map[string]any, what, key string, lo int64) int {
	v := r.int(m, key)
	if r.err == nil && (v < lo || v > 1<<40) {
		r.fail("%s is %d, out of range (want at least %d)", what, v, lo)
	}
	return int(v)
}

// positive reads a finite number above 0, named what in errors.
func (r *ckptReader) positive(m map[string]any, what, key string) float64 {
	v := r.float(m, key)
	if r.err == nil && !(v > 0 && !math.IsInf(v, 1)) {
		r.fail("%s is %v, want a finite number above 0", what, v)
	}
	return v
}

func (r *ckptReader) float(m map[string]any, key string) float64 {
	switch v := m[key].(type) {
	case float64:
		return v
	case int64:
		return float64(v)
	}
	r.fail("%q is missing or not a number", key)
	return math.NaN()
}

func (r *ckptReader) list(m map[string]any, key string) []any {
	v, ok := m[key].([]any)
	if !ok {
		r.fail("%q is missing or not a list", key)
	}
	return v
}

// loadCheckpoint restores the trainer's state from path and returns the loop state.
func (t *trainer) loadCheckpoint(path string) (checkpointState, error) {
	var st checkpointState
	obj, err := serialize.ReadPTObject(path)
	if err != nil {
		return st, err
	}
	r := &ckptReader{path: path}
	top, ok := obj.(map[string]any)
	if !ok || top["format"] != CheckpointFormat {
		return st, fmt.Errorf("checkpoint %s: not a goclip training checkpoint (format %v)", path, top["format"])
	}
	weights, ok := top[t.job.key()].(map[string]any)
	if !ok {
		return st, fmt.Errorf("checkpoint %s: no %q entry (was it written by another kind of run?)", path, t.job.key())
	}
	var missing []string
	for _, p := range t.params {
		if _, ok := weights[p.Name]; !ok {
			missing = append(missing, p.Name)
		}
	}
	if len(missing) > 0 || len(weights) != len(t.params) {
		return st, fmt.Errorf("checkpoint %s: holds %d tensors, the run trains %d (missing: %v)", path, len(weights), len(t.params), missing)
	}
	opt := r.dict(top, "optimizer")
	sched := r.dict(top, "schedule")
	rng := r.dict(top, "rng")
	data := r.dict(top, "data")
	groups := r.list(opt, "groups")
	if r.err != nil {
		return st, r.err
	}
	if len(groups) != len(t.opt.Groups) {
		return st, fmt.Errorf("checkpoint %s: %d optimizer groups, the run has %d", path, len(groups), len(t.opt.Groups))
	}

	var made []*torch.Tensor
	defer func() {
		for _, x := range made {
			x.Free()
		}
	}()
	tensor := func(v any, what string) *torch.Tensor {
		raw, ok := v.(serialize.RawTensor)
		if !ok {
			r.fail("%s is not a tensor", what)
			return nil
		}
		x, err := torch.FromRaw(raw, t.model.Device())
		if err != nil {
			r.fail("%s: %v", what, err)
			return nil
		}
		x = x.Owned()
		made = append(made, x)
		finite := true
		if err := torch.Try(func() { finite = !x.DType().IsFloat() || allFinite(x) }); err != nil {
			r.fail("%s: %v", what, err)
		} else if !finite {
			r.fail("%s holds NaN or infinite values", what)
		}
		return x
	}
	var expAvg, expAvgSq [][]*torch.Tensor
	for gi, g := range groups {
		gm, _ := g.(map[string]any)
		ms, vs := r.list(gm, "exp_avg"), r.list(gm, "exp_avg_sq")
		var gm1, gm2 []*torch.Tensor
		for i := range ms {
			gm1 = append(gm1, tensor(ms[i], fmt.Sprintf("optimizer group %d exp_avg %d", gi, i)))
		}
		for i := range vs {
			gm2 = append(gm2, tensor(vs[i], fmt.Sprintf("optimizer group %d exp_avg_sq %d", gi, i)))
		}
		expAvg, expAvgSq = append(expAvg, gm1), append(expAvgSq, gm2)
	}
	src := map[string]*torch.Tensor{}
	for _, p := range t.params {
		src[p.Name] = tensor(weights[p.Name], p.Name)
	}
	if r.err != nil {
		return st, r.err
	}
	for _, p := range t.params { // every shape before any copy
		var got, want []int64
		if err := torch.Try(func() { got, want = src[p.Name].Shape(), p.T.Shape() }); err != nil {
			return st, fmt.Errorf("checkpoint %s: %s: %w", path, p.Name, err)
		}
		if !slices.Equal(got, want) {
			return st, fmt.Errorf("checkpoint %s: %s: shape %v, the model has %v", path, p.Name, got, want)
		}
	}
	optStep := int64(r.count(opt, "optimizer.step", "step", 0))
	if r.err != nil {
		return st, r.err
	}
	if err := t.opt.LoadState(optStep, expAvg, expAvgSq); err != nil {
		return st, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	if err := torch.Try(func() {
		torch.NoGrad(func() {
			for _, p := range t.params {
				p.T.CopyFrom(src[p.Name])
			}
		})
	}); err != nil {
		return st, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	if sc, ok := top["scaler"].(map[string]any); ok && t.scaler != nil {
		t.scaler.Scale = r.positive(sc, "scaler.scale", "scale")
		t.scaler.Good = r.count(sc, "scaler.good", "good", 0)
		t.scaler.Skipped = r.count(sc, "scaler.skipped", "skipped", 0)
	}
	if r.err != nil {
		return st, r.err
	}
	if err := t.restoreRNG(rng); err != nil {
		return st, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	st.step = r.count(sched, "schedule.step", "step", 0)
	st.pos = dataset.Position{Epoch: r.count(data, "data.epoch", "epoch", 0), Batch: r.count(data, "data.batch", "batch", 0),
		Sample: r.count(data, "data.sample", "sample", 0)}
	st.seed = uint64(r.int(rng, "data_seed"))
	st.best = r.float(top, "best_val_loss")
	if math.IsNaN(st.best) || math.IsInf(st.best, -1) {
		r.fail("best_val_loss %v is not a loss", st.best)
	}
	st.bestStep = r.count(top, "best_step", "best_step", -1)
	st.skipped = r.count(top, "skipped", "skipped", 0)
	if r.err == nil && (st.skipped > st.step || st.bestStep > st.step) {
		r.fail("skipped %d and best_step %d must not exceed schedule.step %d", st.skipped, st.bestStep, st.step)
	}
	return st, r.err
}

// checkPosition checks a restored data position against this run's epochs of perEpoch
// batches over items training images.
func (st checkpointState) checkPosition(path string, perEpoch, items int) error {
	if st.pos.Batch > perEpoch {
		return fmt.Errorf("checkpoint %s: data.batch %d is beyond the %d batches of an epoch of this run", path, st.pos.Batch, perEpoch)
	}
	if st.pos.Sample > items {
		return fmt.Errorf("checkpoint %s: data.sample %d is beyond the %d training images of this run", path, st.pos.Sample, items)
	}
	return nil
}

// restoreRNG sets the torch generators from a checkpoint's "rng" entry.
func (t *trainer) restoreRNG(rng map[string]any) error {
	cpu, ok := rng["torch_cpu"].(serialize.RawTensor)
	if !ok {
		return errors.New(`"rng" has no torch_cpu state`)
	}
	s, err := torch.FromRaw(cpu, torch.CPU)
	if err != nil {
		return err
	}
	defer s.Owned().Free()
	if err := torch.SetRNGState(torch.CPU, s); err != nil {
		return err
	}
	if dev := t.model.Device(); dev.Type == torch.CUDADevice {
		if c, ok := rng["torch_cuda"].(serialize.RawTensor); ok {
			s, err := torch.FromRaw(c, torch.CPU)
			if err != nil {
				return err
			}
			defer s.Owned().Free()
			return torch.SetRNGState(dev, s)
		}
	}
	return nil
}

// allFinite reports whether every element of x is finite.
func allFinite(x *torch.Tensor) bool {
	fin := x.IsFinite()
	all := fin.All()
	ok := all.Item() != 0
	all.Free()
	fin.Free()
	return ok
}
