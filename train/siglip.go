package train

// SigLIP's pairwise sigmoid loss (Zhai et al., "Sigmoid Loss for Language Image
// Pre-Training", 2023): every image-caption pair of the batch is a binary problem,
// positive on the diagonal, negative elsewhere, with logits t·cos(x_i, y_j) + b of a
// learnable temperature t = exp(t') and bias b, initialised t' = log 10, b = -10.

import (
	"math"

	"goclip/clip"
	"goclip/torch"
)

// The losses of Options.Loss.
const (
	LossCLIP   = "clip"
	LossSigLIP = "siglip"
)

// LogitBiasKey is the name of SigLIP's bias in checkpoints, as HF's SiglipModel and
// open_clip name it.
const LogitBiasKey = "logit_bias"

// SigLIP's initial log-temperature t' and bias b.
var (
	SigLIPInitLogitScale = math.Log(10)
	SigLIPInitLogitBias  = -10.0
)

// SigLIPLossGathered is this rank's share of the sigmoid loss over the global batch of
// N pairs, in float32: -(1/N)·Σ_i Σ_j log σ(z_ij·(exp(logitScale)·cos(img_i, txt_j) +
// logitBias)) with z_ij = 1 for i = j and -1 otherwise (open_clip's SigLipLoss: the sum
// over pairs divided by the images). img and txt [b, P] are this rank's unnormalised
// embeddings, rows of the global batch following those of the lower ranks; logitScale
// and logitBias are scalars. Only the text features are exchanged (gathered with
// gradients): this rank's images meet every caption of the global batch, so the ranks'
// rows together cover every pair once. The share is scaled by W/N so that the mean
// over ranks is the global-batch loss; after backward on every rank and
// AverageGradients, the gradients equal the global-batch loss's. With a nil pg it is
// the loss of the local batch. A failed tensor operation or collective is the error.
func SigLIPLossGathered(img, txt, logitScale, logitBias *torch.Tensor, pg *torch.ProcessGroup) (loss *torch.Tensor, err error) {
	start, err := rowOffsetOf(img, pg)
	if err != nil {
		return nil, err
	}
	err = torch.Try(func() { loss = sigLIPLossGathered(img, txt, logitScale, logitBias, pg, start) })
	return loss, err
}

// sigLIPLossGathered is SigLIPLossGathered inside tensor maths, with this rank's row
// offset start (rowOffset) given: it panics with a *torch.Error, a failed collective's
// included, for the caller to recover.
func sigLIPLossGathered(img, txt, logitScale, logitBias *torch.Tensor, pg *torch.ProcessGroup, start int64) *torch.Tensor {
	in := clip.Normalized(img) // [b, P]
	tn := clip.Normalized(txt) // [b, P]
	allTxt := tn               // [N, P]
	world := 1
	b := in.Size(0)
	if pg != nil {
		world = pg.World()
		allTxt = pg.GatherWithGrad(tn) // [N, P]
	}
	n := allTxt.Size(0)
	labels := make([]float32, b*n) // [b, N]: 1 on this rank's diagonal, -1 elsewhere
	for i := range labels {
		labels[i] = -1
	}
	for i := int64(0); i < b; i++ {
		labels[i*n+start+i] = 1
	}
	z := torch.FromFloat32(labels, b, n).ToDevice(in.Device(), false)         // [b, N]
	x := clip.Logits(in, allTxt, logitScale).Add(logitBias.To(torch.Float32)) // [b, N]
	x = x.Mul(z)                                                              // [b, N]
	// -log σ(x) = relu(-x) + log(1 + exp(-|x|)), finite for every x.
	nll := x.Neg().Relu().Add(x.Abs().Neg().Exp().AddScalar(1).Log()) // [b, N]
	return nll.Sum(false).MulScalar(float64(world) / float64(n))      // []
}
