package train

import (
	"fmt"
	"math"
)

// Validate checks every setting's range and names the goclip train flag of the first
// one out of range. It takes options as a command line gives them: zero is accepted
// only where the field gives zero a meaning (Epochs with MaxSteps, MaxSteps,
// EvalEvery, SaveEvery, ClipGrad, Warmup, MinLR, WeightDecay) or where the command line
// has no flag for it (Beta1, Eps, InitScale: zero takes the default). Run applies the
// defaults of the zero fields first and then calls Validate.
func (o Options) Validate() error {
	bad := func(flag string, v any, want string) error {
		return fmt.Errorf("--%s %v: %s", flag, v, want)
	}
	finite := func(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
	switch {
	case o.Epochs < 0 || (o.Epochs == 0 && o.MaxSteps <= 0):
		return bad("epochs", o.Epochs, "want at least 1 (or 0 with --max-steps N: as many epochs as N steps need)")
	case o.MaxSteps < 0:
		return bad("max-steps", o.MaxSteps, "want 0 (no limit) or more")
	case o.BatchSize < 1:
		return bad("batch-size", o.BatchSize, "want at least 1")
	case o.GradAccum < 1 || o.GradAccum > o.BatchSize:
		return bad("grad-accum", o.GradAccum, fmt.Sprintf("want 1 to --batch-size (%d)", o.BatchSize))
	case !(o.LR > 0) || !finite(o.LR):
		return bad("lr", o.LR, "want a learning rate above 0")
	case !(o.MinLR >= 0) || o.MinLR > o.LR:
		return bad("min-lr", o.MinLR, fmt.Sprintf("want 0 to --lr (%g)", o.LR))
	case o.Warmup < 0:
		return bad("warmup", o.Warmup, "want 0 or more steps")
	case o.Schedule != "" && o.Schedule != Cosine && o.Schedule != Constant:
		return bad("schedule", o.Schedule, "want "+Cosine+" or "+Constant)
	case !(o.WeightDecay >= 0) || !finite(o.WeightDecay):
		return bad("weight-decay", o.WeightDecay, "want 0 or more")
	case !(o.Beta1 >= 0 && o.Beta1 < 1):
		return bad("beta1", o.Beta1, "want a value in [0, 1)")
	case !(o.Beta2 > 0 && o.Beta2 < 1):
		return bad("beta2", o.Beta2, "want a value in (0, 1)")
	case !(o.Eps >= 0) || !finite(o.Eps):
		return bad("eps", o.Eps, "want a value above 0")
	case !(o.ClipGrad >= 0) || !finite(o.ClipGrad):
		return bad("clip-grad", o.ClipGrad, "want 0 (no clipping) or a positive norm")
	case !(o.InitScale >= 0) || !finite(o.InitScale):
		return bad("init-scale", o.InitScale, "want a loss scale above 0")
	case o.MaxBadSteps < 1:
		return bad("max-bad-steps", o.MaxBadSteps, "want at least 1")
	case o.LogEvery < 1:
		return bad("log-every", o.LogEvery, "want at least 1 step")
	case o.EvalEvery < 0:
		return bad("eval-every", o.EvalEvery, "want 0 (each epoch) or more steps")
	case o.ZeroshotEvery < 0:
		return bad("zeroshot-every", o.ZeroshotEvery, "want 0 (at each evaluation) or more steps")
	case o.EvalBatchSize < 1:
		return bad("eval-batch-size", o.EvalBatchSize, "want at least 1")
	case o.SaveEvery < 0:
		return bad("save-every", o.SaveEvery, "want 0 (at evaluations only) or more steps")
	case o.Keep < 0:
		return bad("keep", o.Keep, "want 0 (keep every step checkpoint) or more")
	case o.Keep > 0 && o.SaveEvery == 0:
		return bad("keep", o.Keep, "keeps the step checkpoints of --save-every N: give --save-every too")
	case o.Loss != "" && o.Loss != LossCLIP && o.Loss != LossSigLIP:
		return bad("loss", o.Loss, "want "+LossCLIP+" or "+LossSigLIP)
	case o.Workers < 1:
		return bad("workers", o.Workers, "want at least 1")
	}
	return o.Lock.Validate()
}
