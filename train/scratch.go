package train

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

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

// ScratchVocabulary says where a from-scratch run's tokenizer comes from (see
// ScratchTokenizer).
type ScratchVocabulary struct {
	Run      string           // the run folder: its tokenizer/ holds the vocabulary
	Resume   bool             // a resumed run: the run's own tokenizer/
	Path     string           // a vocabulary to use (tokenizer.Load's forms); "": train one
	Data     *dataset.Dataset // whose training captions a new vocabulary learns from
	Streamed bool             // the training data are webdataset shards: no captions to learn from
	Size     int              // tokens of a trained vocabulary (0: DefaultVocabSize of the captions)
	Save     bool             // write it to RUN/tokenizer/ (the main rank)
	Log      io.Writer        // the training's report (nil: none)
}

// ScratchTokenizer is a from-scratch run's tokenizer: on resume the run's own
// (RUN/tokenizer/, which must be there), else the vocabulary at v.Path, else a BPE
// vocabulary of v.Size tokens trained on v.Data's training captions. In a distributed
// run every rank builds the same one; with v.Save a new run writes it to
// RUN/tokenizer/. Errors name the flags (--tokenizer, --resume).
func ScratchTokenizer(v ScratchVocabulary) (*tokenizer.Tokenizer, error) {
	dir := RunDir(v.Run).Tokenizer()
	if v.Resume {
		// The run's own vocabulary; a resume writes nothing before the run starts.
		if _, err := os.Stat(filepath.Join(dir, tokenizer.VocabFile)); err != nil {
			return nil, fmt.Errorf("--resume: %s has no tokenizer (%s)", v.Run, filepath.Join(dir, tokenizer.VocabFile))
		}
		return tokenizer.Load(dir)
	}
	var tok *tokenizer.Tokenizer
	var err error
	switch {
	case v.Path != "":
		tok, err = tokenizer.Load(v.Path)
	case v.Streamed:
		return nil, errors.New("--data names webdataset shards: give --tokenizer (a vocabulary is trained on a data set folder's captions only)")
	default:
		captions := v.Data.Captions(dataset.Train)
		size := v.Size
		if size <= 0 {
			size = DefaultVocabSize(captions)
		}
		if v.Log == nil {
			v.Log = io.Discard
		}
		fmt.Fprintf(v.Log, "tokenizer: training a %d-token BPE vocabulary on %d captions\n", size, captions)
		task := NewTask(v.Log, "tokenizer", "merge")
		tok, err = TrainTokenizer(v.Data.Split(dataset.Train), size, task.Update)
		task.Done()
	}
	if err != nil || !v.Save {
		return tok, err
	}
	return tok, tok.Save(dir)
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
