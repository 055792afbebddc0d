package clip

import (
	"fmt"

	"goclip/clip/tokenizer"
	"goclip/torch"
)

// Pretrained is the model that `--model DIR` names, found on disk with its tokenizer
// (FindPretrained) and not yet loaded (Load): a command checks what it can before
// any work, then loads the weights on the device it chose.
type Pretrained struct {
	Source    Source
	Tokenizer *tokenizer.Tokenizer // the tokenizer beside the weights; nil when there is none
}

// FindPretrained finds the model at dir (FindCheckpoint) and loads the tokenizer beside
// its weights. With needTokenizer a model without one is an error naming dir; without,
// Tokenizer stays nil then.
func FindPretrained(dir string, needTokenizer bool) (*Pretrained, error) {
	src, err := FindCheckpoint(dir)
	if err != nil {
		return nil, err
	}
	p := &Pretrained{Source: src}
	if src.Tokenizer == "" {
		if needTokenizer {
			return nil, fmt.Errorf("--model %s has no tokenizer (vocab.json and merges.txt) beside its weights", dir)
		}
		return p, nil
	}
	if p.Tokenizer, err = tokenizer.Load(src.Tokenizer); err != nil {
		return nil, err
	}
	return p, nil
}

// NeedTokenizer is the tokenizer, or an error naming the model when it has none.
func (p *Pretrained) NeedTokenizer() (*tokenizer.Tokenizer, error) {
	if p.Tokenizer == nil {
		return nil, fmt.Errorf("model %s has no tokenizer (vocab.json and merges.txt) beside its weights", p.Source.Path)
	}
	return p.Tokenizer, nil
}

// Load loads the weights on dev as float32 parameters (LoadPretrained).
func (p *Pretrained) Load(dev torch.Device) (*Model, Config, error) {
	return LoadPretrained(p.Source.Path, dev, torch.Float32)
}
