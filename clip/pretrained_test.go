package clip

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"goclip/internal/testutil"
	"goclip/torch"
)

// FindPretrained finds the fixture model with its tokenizer, and Load gives the model
// of its config; without vocab.json and merges.txt beside the weights a model is found
// with no tokenizer, or is an error naming the folder when one is needed.
func TestFindPretrained(t *testing.T) {
	dir := testutil.Fixtures(t, "clip-tiny-openai")
	pre, err := FindPretrained(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if pre.Tokenizer == nil || pre.Source.Tokenizer == "" {
		t.Fatalf("tokenizer not found: %+v", pre.Source)
	}
	if ids := pre.Tokenizer.EncodeContext("a cat", 0); len(ids) < 3 || ids[0] != 49406 {
		t.Errorf("tokenizer ids %v", ids)
	}
	m, cfg, err := pre.Load(torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	if m.Config.ProjectionDim != cfg.ProjectionDim || cfg.ProjectionDim <= 0 {
		t.Errorf("loaded config %+v", cfg)
	}

	bare := t.TempDir() // the weights and config, no tokenizer
	for _, f := range []string{"config.json", "model.safetensors"} {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bare, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := FindPretrained(bare, true); err == nil || !strings.Contains(err.Error(), bare) || !strings.Contains(err.Error(), "no tokenizer") {
		t.Errorf("no tokenizer, needed: %v", err)
	}
	pre, err = FindPretrained(bare, false)
	if err != nil || pre.Tokenizer != nil {
		t.Fatalf("no tokenizer, not needed: %v, %v", pre, err)
	}
	if _, err := pre.NeedTokenizer(); err == nil || !strings.Contains(err.Error(), bare) {
		t.Errorf("NeedTokenizer: %v", err)
	}
	if _, err := FindPretrained(filepath.Join(bare, "absent"), false); err == nil {
		t.Error("a missing folder was found")
	}
}
