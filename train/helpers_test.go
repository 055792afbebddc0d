package train

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"goclip/clip"
	"goclip/clip/tokenizer"
	"goclip/dataset"
	"goclip/torch"
)

// fixture is a synthetic data set shared by the tests of this package (read-only).
type fixture struct {
	ds  *dataset.Dataset
	tok *tokenizer.Tokenizer
	dir string
}

var (
	fixtures   = map[string]*fixture{}
	fixturesMu sync.Mutex
	fixtureDir string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "goclip-train-test-")
	if err != nil {
		panic(err)
	}
	fixtureDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// synthData returns a synthetic data set of n images of side 64 in domain, made once
// per test binary.
func synthData(t testing.TB, n int, domain string) *fixture {
	return synthSplit(t, n, domain, 0, 0)
}

// synthSplit is synthData with val and test images (0: the defaults).
func synthSplit(t testing.TB, n int, domain string, val, test int) *fixture {
	t.Helper()
	fixturesMu.Lock()
	defer fixturesMu.Unlock()
	key := domain + "-" + itoa(n) + "-" + itoa(val) + "-" + itoa(test)
	if f, ok := fixtures[key]; ok {
		return f
	}
	dir := filepath.Join(fixtureDir, key)
	if _, err := dataset.Synthesize(dir, dataset.SynthOptions{Images: n, Size: 64, Seed: 7, Domain: domain, Val: val, Test: test}); err != nil {
		t.Fatal(err)
	}
	f := openFixture(t, dir)
	fixtures[key] = f
	return f
}

// openFixture reads the synthetic data set in dir and trains the tests' tokenizer on
// its training captions.
func openFixture(t testing.TB, dir string) *fixture {
	t.Helper()
	ds, err := dataset.Open(dir, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := TrainTokenizer(ds.Split(dataset.Train), 600, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{ds: ds, tok: tok, dir: dir}
}

func itoa(n int) string {
	b := []byte{}
	for {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
		if n == 0 {
			return string(b)
		}
	}
}

// tinyConfig is the tiny preset shrunk further for tests (32-pixel images, width 64, a
// context of 24 tokens) with the fixture's vocabulary.
func tinyConfig(t testing.TB, tok *tokenizer.Tokenizer) clip.Config {
	t.Helper()
	cfg, err := clip.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	cfg = WithTokenizer(cfg, tok)
	cfg.Text.MaxPositionEmbeddings = 24
	cfg.Vision.ImageSize = 32
	cfg.Vision.HiddenSize, cfg.Text.HiddenSize = 64, 64
	cfg.Vision.IntermediateSize, cfg.Text.IntermediateSize = 256, 256
	cfg.Vision.NumAttentionHeads, cfg.Text.NumAttentionHeads = 2, 2
	cfg.ProjectionDim, cfg.Vision.ProjectionDim, cfg.Text.ProjectionDim = 32, 32, 32
	return cfg
}

// newModel builds a seeded model.
func newModel(t testing.TB, cfg clip.Config, seed uint64) *clip.Model {
	t.Helper()
	torch.ManualSeed(seed)
	m, err := clip.New(cfg, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Free)
	return m
}

// runJob trains a fresh model and returns the result.
func runJob(t testing.TB, f *fixture, m *clip.Model, opts Options) (*Result, error) {
	t.Helper()
	job := Job{Model: m, Tokenizer: f.tok, Train: f.ds.Split(dataset.Train), Val: f.ds.Split(dataset.Val)}
	opts.SkipExport = true
	if opts.Workers == 0 {
		opts.Workers = 2
	}
	return Run(context.Background(), job, opts)
}
