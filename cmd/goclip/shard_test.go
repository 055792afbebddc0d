package main

// goclip shard, and training on webdataset shards end to end: the shards read back in
// goclip and in Python's webdataset, Ctrl-C then --resume on shards gives the losses
// of an uninterrupted run, and two ranks train on shards.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"goclip/dataset"
	"goclip/internal/testutil"
	"goclip/train"
)

func TestShardCommandRoundTrip(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	mustGoclip(t, "synth", "--out", data, "--images", "40", "--size", "32", "--seed", "2")
	ds, err := dataset.Open(data, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "wds")
	mustGoclip(t, "shard", "--data", data, "--out", out, "--shard-size", "16", "--workers", "2")
	for _, split := range []dataset.Split{dataset.Train, dataset.Val, dataset.Test} {
		items := ds.Split(split)
		sh, err := dataset.OpenShards(filepath.Join(out, string(split)), dataset.ShardOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := sh.EpochSamples(); n != len(items) || len(sh.Paths) != (len(items)+15)/16 {
			t.Fatalf("%s: %d samples in %d shards, want %d images", split, n, len(sh.Paths), len(items))
		}
		l, err := dataset.NewStreamLoader(sh, dataset.LoaderOptions{Size: 16, BatchSize: 1, Workers: 2, Uint8: true, FirstCaption: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.StartAt(dataset.Position{}); err != nil {
			t.Fatal(err)
		}
		for i, it := range items { // the split's order, each image with its first caption
			b, err := l.Next(context.Background())
			if err != nil {
				t.Fatalf("%s sample %d: %v", split, i, err)
			}
			img, err := dataset.ReadImage(it.Image, 0)
			if err != nil {
				t.Fatal(err)
			}
			want := dataset.ResizeCropUint8(img, 16).Pix
			if b.Captions[0] != it.Captions[0] || !bytes.Equal(b.PixelsU8, want) {
				t.Fatalf("%s sample %d (%s): caption %q, want %q; pixels equal %v", split, i, b.Keys[0], b.Captions[0], it.Captions[0], bytes.Equal(b.PixelsU8, want))
			}
		}
		if _, err := l.Next(context.Background()); err != io.EOF {
			t.Fatalf("%s: more samples than images (%v)", split, err)
		}
		l.Close()
	}
	if _, _, err := runGoclip(t, "shard", "--data", data, "--out", out); err == nil || !strings.Contains(err.Error(), "already holds shards") {
		t.Errorf("shard over shards: %v", err)
	}

	// --resize 24, read by Python's webdataset: every sample's key, caption (txt and
	// json) and a JPEG of short side 24 decoded by PIL.
	py := testutil.PythonTorch(t, "webdataset", "PIL")
	small := filepath.Join(dir, "small")
	mustGoclip(t, "shard", "--data", data, "--out", small, "--shard-size", "16", "--resize", "24")
	script := `
import sys, json, webdataset as wds
ds = wds.WebDataset(sys.argv[1], shardshuffle=False).decode("pil")
print(json.dumps([[s["__key__"], s["txt"], s["json"]["captions"], s["json"]["name"], list(s["jpg"].size)] for s in ds]))
`
	cmd := exec.Command(py, "-c", script, filepath.Join(small, "train", "train-{000000..000002}.tar"))
	cmd.Dir = os.TempDir()
	raw, err := cmd.Output()
	if err != nil {
		t.Fatalf("python webdataset: %v", err)
	}
	var rows []struct {
		Key, Txt string
		Captions []string
		Name     string
		Size     [2]int
	}
	var arr [][]json.RawMessage
	if err := json.Unmarshal(raw, &arr); err != nil {
		t.Fatal(err)
	}
	for _, a := range arr {
		var r struct {
			Key, Txt string
			Captions []string
			Name     string
			Size     [2]int
		}
		json.Unmarshal(a[0], &r.Key)
		json.Unmarshal(a[1], &r.Txt)
		json.Unmarshal(a[2], &r.Captions)
		json.Unmarshal(a[3], &r.Name)
		json.Unmarshal(a[4], &r.Size)
		rows = append(rows, r)
	}
	items := ds.Split(dataset.Train)
	if len(rows) != len(items) {
		t.Fatalf("python read %d samples, want %d", len(rows), len(items))
	}
	for i, r := range rows {
		it := items[i]
		f, _ := os.Open(it.Image)
		cfg, _, err := image.DecodeConfig(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		w, h := dataset.ShortestSideSize(cfg.Width, cfg.Height, 24)
		if r.Key != fmt.Sprintf("%09d", i) || r.Txt != it.Captions[0] || r.Name != it.Name ||
			strings.Join(r.Captions, "|") != strings.Join(it.Captions, "|") || r.Size != [2]int{w, h} {
			t.Errorf("python sample %d: %+v; want %s, %q, size %dx%d", i, r, it.Name, it.Captions[0], w, h)
		}
	}
}

// shardTrainingData writes a synthetic data set's training split as shards of 16
// and a tokenizer trained on its captions; it returns the shard folder and the
// tokenizer folder.
func shardTrainingData(t *testing.T, dir string, images int) (string, string) {
	t.Helper()
	data := filepath.Join(dir, "data")
	mustGoclip(t, "synth", "--out", data, "--images", fmt.Sprint(images), "--size", "32", "--seed", "4", "--val", "-1", "--test", "-1")
	mustGoclip(t, "shard", "--data", data, "--out", filepath.Join(dir, "wds"), "--shard-size", "16")
	ds, err := dataset.Open(data, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := train.TrainTokenizer(ds.Split(dataset.Train), 600, nil)
	if err != nil {
		t.Fatal(err)
	}
	tokDir := filepath.Join(dir, "tok")
	if err := tok.Save(tokDir); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "wds", "train"), tokDir
}

func TestTrainShardsSIGINTThenResume(t *testing.T) {
	if testing.Short() {
		t.Skip("trains two small runs")
	}
	dir := t.TempDir()
	shards, tokDir := shardTrainingData(t, dir, 96) // 6 shards of 16: 6 steps of 16 per epoch
	args := func(out string) []string {
		return []string{"train", "--config", "tiny", "--tokenizer", tokDir, "--data", shards, "--out", out, "--epochs", "2",
			"--batch-size", "16", "--threads", "1", "--workers", "2", "--device", "cpu", "--shuffle-buffer", "20",
			"--precision", "fp32", "--log-every", "1", "--warmup", "2", "--seed", "9"}
	}
	whole := filepath.Join(dir, "whole")
	if out, err := childGoclip(t, args(whole)...).CombinedOutput(); err != nil {
		t.Fatalf("uninterrupted run: %v\n%s", err, out)
	}
	run := filepath.Join(dir, "interrupted")
	interruptAfterSteps(t, run, 2, args(run)...)
	steps := len(trainLossesQuiet(run))
	if steps >= 12 {
		t.Fatalf("interrupted after %d steps: the run had finished", steps)
	}
	if out, err := childGoclip(t, append(args(run), "--resume")...).CombinedOutput(); err != nil {
		t.Fatalf("resumed run: %v\n%s", err, out)
	}
	a, b := trainLossesOf(t, whole), trainLossesOf(t, run)
	if len(a) != 12 || len(b) != 12 {
		t.Fatalf("loss rows: %d uninterrupted, %d resumed; want 12", len(a), len(b))
	}
	for i := range a {
		if math.Abs(a[i]-b[i]) > 1e-5*math.Abs(a[i]) {
			t.Errorf("step %d: loss %.7f uninterrupted, %.7f interrupted after step %d and resumed", i+1, a[i], b[i], steps)
		}
	}
	t.Logf("interrupted after step %d; 12 losses equal within 1e-5 relative", steps)
}

// TestLaunchTrainShards: two ranks train on shards (each its own 2 of the 4 shards,
// its 4 rows of each global batch of 8; the split itself is tested in package dataset).
func TestLaunchTrainShards(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a small run")
	}
	useTestBinaryForLaunch(t)
	dir := t.TempDir()
	shards, tokDir := shardTrainingData(t, dir, 64)
	out := filepath.Join(dir, "run")
	launchRun(t, 2, "train", "--config", "tiny", "--tokenizer", tokDir, "--data", shards, "--out", out, "--epochs", "1",
		"--batch-size", "8", "--threads", "1", "--workers", "1", "--device", "cpu", "--precision", "fp32",
		"--log-every", "1", "--warmup", "1", "--seed", "5", "--dist-timeout", "60s")
	if got := trainLossesOf(t, out); len(got) != 8 {
		t.Fatalf("%d loss rows, want 64/8 = 8 steps", len(got))
	}
	if _, err := os.Stat(filepath.Join(out, "model.pt")); err != nil {
		t.Errorf("no model.pt: %v", err)
	}
}

// TestShardFromTSV: a TSV named as --data with open_clip's flags (absolute paths
// within --data-root) is read and sharded.
func TestShardFromTSV(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	mustGoclip(t, "synth", "--out", data, "--images", "12", "--size", "32", "--seed", "3")
	ds, err := dataset.Open(data, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("caption_text\timage_path\n")
	for _, it := range ds.Items {
		fmt.Fprintf(&b, "%s\t%s\n", it.Captions[0], it.Image)
	}
	tsv := filepath.Join(dir, "list.tsv")
	if err := os.WriteFile(tsv, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "wds")
	mustGoclip(t, "shard", "--data", tsv, "--csv-img-key", "image_path", "--csv-caption-key", "caption_text",
		"--data-root", data, "--out", out, "--shard-size", "100")
	total := 0
	for _, s := range []string{"train", "val", "test"} {
		if sh, err := dataset.OpenShards(filepath.Join(out, s), dataset.ShardOptions{}); err == nil {
			n, _ := sh.EpochSamples()
			total += n
		}
	}
	if total != 12 {
		t.Fatalf("%d samples sharded, want 12", total)
	}
	// An image outside --data-root is refused.
	if _, _, err := runGoclip(t, "shard", "--data", tsv, "--csv-img-key", "image_path", "--csv-caption-key", "caption_text",
		"--data-root", dir+"/elsewhere", "--out", filepath.Join(dir, "x")); err == nil {
		t.Error("a missing --data-root was accepted")
	}
}

// TestEvalAndTrainOnShardSplits: goclip eval on goclip shard's output gives the result
// of eval on the data set folder (the same images, first captions and order), and
// train on that output evaluates on its val/ shards and tests on its test/ shards.
func TestEvalAndTrainOnShardSplits(t *testing.T) {
	model := testutil.Fixtures(t, "clip-tiny-openai")
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	mustGoclip(t, "synth", "--out", data, "--images", "60", "--size", "32", "--seed", "6", "--val", "8", "--test", "10")
	wds := filepath.Join(dir, "wds")
	mustGoclip(t, "shard", "--data", data, "--out", wds, "--shard-size", "4")
	for _, split := range []string{"test", "val"} {
		args := []string{"eval", "--model", model, "--split", split, "--json", "--device", "cpu", "--precision", "fp32", "--threads", "1", "--batch-size", "4"}
		a := mustGoclip(t, append(args, "--data", data)...)
		b := mustGoclip(t, append(args, "--data", wds)...)
		last := map[string]string{"test": "000002", "val": "000001"}[split] // 10 and 8 images in shards of 4
		c := mustGoclip(t, append(args, "--data", filepath.Join(wds, split, split+"-{000000.."+last+"}.tar"))...)
		if a != b || a != c || !strings.Contains(a, `"images":`) {
			t.Errorf("%s: folder %s; shard splits %s; shard list %s", split, a, b, c)
		}
	}
	tok := filepath.Join(dir, "tok")
	ds, _ := dataset.Open(data, dataset.Options{})
	tk, err := train.TrainTokenizer(ds.Split(dataset.Train), 600, nil)
	if err != nil {
		t.Fatal(err)
	}
	tk.Save(tok)
	run := filepath.Join(dir, "run")
	_, errOut, err := runGoclip(t, "train", "--config", "tiny", "--tokenizer", tok, "--data", wds, "--out", run, "--max-steps", "2",
		"--batch-size", "8", "--threads", "1", "--workers", "1", "--device", "cpu", "--precision", "fp32", "--warmup", "1")
	if err != nil {
		t.Fatalf("train on shard splits: %v\n%s", err, errOut)
	}
	if !strings.Contains(errOut, "8 val, 10 test images") || math.IsNaN(lastValLoss(t, run)) {
		t.Errorf("no validation on val/ shards:\n%s", errOut)
	}
	if _, err := os.Stat(filepath.Join(run, "eval.json")); err != nil {
		t.Errorf("no test evaluation: %v", err)
	}
}
