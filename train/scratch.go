package train

import (
	"goclip/clip"
	"goclip/clip/tokenizer"
	"goclip/dataset"
	"goclip/torch"
)

// DefaultVocabSize is the BPE vocabulary trained for a from-scratch run on captions
// captions when none is given: 4,096 tokens for small sets, growing with the data up to
// CLIP's 49,408.
func DefaultVocabSize(captions int) int {
	switch {
	case captions <= 50_000:
		return 4096
	case captions <= 200_000:
		return 16384
	case captions <= 1_000_000:
		return 32768
	}
	return 49408
}

// TrainTokenizer learns a BPE vocabulary of vocabSize tokens from the captions of items,
// reporting its merges to progress (nil: nowhere; see tokenizer.TrainProgress).
func TrainTokenizer(items []dataset.Item, vocabSize int, progress func(done, total int)) (*tokenizer.Tokenizer, error) {
	var caps []string
	for _, it := range items {
		caps = append(caps, it.Captions...)
	}
	return tokenizer.TrainProgress(caps, vocabSize, progress)
}

// NewScratchModel builds the model of a from-scratch run on dev: the architecture cfg
// fitted to tok (WithTokenizer), with contextLength text positions (0: cfg's), its
// weights drawn from the torch generator seeded with seed.
func NewScratchModel(cfg clip.Config, tok *tokenizer.Tokenizer, contextLength int, seed uint64, dev torch.Device) (*clip.Model, error) {
	cfg = WithTokenizer(cfg, tok)
	if contextLength > 0 {
		cfg.Text.MaxPositionEmbeddings = int64(contextLength)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := torch.Try(func() { torch.ManualSeed(seed) }); err != nil {
		return nil, err
	}
	return clip.New(cfg, dev)
}

// WithTokenizer fits a from-scratch architecture to a tokenizer: the text vocabulary is
// its size, and the start, end and padding ids are its special tokens (the text is
// pooled at the first end token).
func WithTokenizer(cfg clip.Config, tok *tokenizer.Tokenizer) clip.Config {
	cfg.Text.VocabSize = int64(tok.VocabSize())
	cfg.Text.BOSTokenID = int64(tok.StartID())
	cfg.Text.EOSTokenID = int64(tok.EndID())
	cfg.Text.PadTokenID = int64(tok.EndID())
	return cfg
}
