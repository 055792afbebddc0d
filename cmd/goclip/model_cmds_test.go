package main

// Tests of version, info, convert, embed and zeroshot, run in-process through newApp.

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"goclip/internal/testutil"
	"goclip/torch/serialize"
)

// runGoclip runs the app with args (without the program name) and returns its stdout
// and stderr.
func runGoclip(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errw bytes.Buffer
	app := newApp()
	app.Writer, app.ErrWriter = &out, &errw
	err = runApp(app, append([]string{"goclip"}, args...))
	return out.String(), errw.String(), err
}

// mustGoclip is runGoclip failing the test on an error.
func mustGoclip(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := runGoclip(t, args...)
	if err != nil {
		t.Fatalf("goclip %s: %v\nstderr: %s", strings.Join(args, " "), err, errOut)
	}
	return out
}

func TestVersionCommand(t *testing.T) {
	out := mustGoclip(t, "version")
	for _, want := range []string{"goclip " + version, "libtorch ", "CUDA available:"} {
		if !strings.Contains(out, want) {
			t.Errorf("version output lacks %q:\n%s", want, out)
		}
	}
	var v versionInfo
	if err := json.Unmarshal([]byte(mustGoclip(t, "version", "--json")), &v); err != nil || v.Goclip != version || v.Torch == "" {
		t.Errorf("version --json: %+v, %v", v, err)
	}
}

func TestInfoCommand(t *testing.T) {
	out := mustGoclip(t, "info", "--config", "vit-b-16", "--lora-r", "64", "--lora-alpha", "128", "--lora-targets", "q_proj,k_proj,v_proj")
	const peft = "trainable params: 5,898,240 || all params: 155,518,977 || trainable%: 3.7926\n"
	if out != peft {
		t.Errorf("info vit-b-16 LoRA:\n got %q\nwant %q", out, peft)
	}
	var counts paramCounts
	if err := json.Unmarshal([]byte(mustGoclip(t, "info", "--config", "vit-b-16", "--json")), &counts); err != nil {
		t.Fatal(err)
	}
	if counts != (paramCounts{Total: 149_620_737, Trainable: 149_620_737, TrainablePercent: 100}) {
		t.Errorf("info vit-b-16 --json: %+v", counts)
	}
	if _, _, err := runGoclip(t, "info", "--config", "tiny", "--lora-r", "4", "--lora-targets", "q_proj,nope"); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("unknown LoRA target: %v", err)
	}
	if _, _, err := runGoclip(t, "info"); err == nil {
		t.Error("info with neither --model nor --config succeeded")
	}
	fx := testutil.Fixtures(t)
	out = mustGoclip(t, "info", "--model", filepath.Join(fx, "clip-tiny-openai"))
	if !strings.HasPrefix(out, "trainable params: 3,700,289 || all params: 3,700,289 || trainable%: 100.0000") {
		t.Errorf("info --model fixture: %q", out)
	}
}

func TestConvertCommand(t *testing.T) {
	fx := testutil.Fixtures(t, "clip-tiny-openai")
	tmp := t.TempDir()
	pt := filepath.Join(tmp, "clip.pt")
	mustGoclip(t, "convert", fx, pt)

	// A bare .pt has no architecture: without --config it is an error that says so.
	bare := filepath.Join(t.TempDir(), "bare.pt")
	if err := os.Rename(pt, bare); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runGoclip(t, "convert", bare, filepath.Join(tmp, "x")); err == nil || !strings.Contains(err.Error(), "--config") {
		t.Errorf("bare .pt without --config: %v", err)
	}
	hf := filepath.Join(tmp, "hf")
	mustGoclip(t, "convert", "--config", filepath.Join(fx, "config.json"), bare, hf)
	want, _, err := serialize.ReadSafetensors(filepath.Join(fx, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := serialize.ReadSafetensors(filepath.Join(hf, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	for k, w := range want {
		if strings.HasSuffix(k, ".position_ids") {
			continue
		}
		if g, ok := got[k]; !ok || !bytes.Equal(g.Data, w.Data) || !slices.Equal(g.Shape, w.Shape) {
			t.Errorf("%s differs after fixture -> .pt -> folder", k)
		}
	}

	// float16 safetensors, then back to a folder: halves of the original values.
	half := filepath.Join(tmp, "half.safetensors")
	mustGoclip(t, "convert", "--dtype", "float16", hf, half)
	hdr, _, err := serialize.ReadSafetensorsHeader(half)
	if err != nil || hdr["logit_scale"].DType != serialize.F16 {
		t.Fatalf("float16 file: %v %v", hdr["logit_scale"], err)
	}

	// The wrong architecture is one error naming the mismatched keys.
	_, _, err = runGoclip(t, "convert", "--config", "tiny", fx, filepath.Join(tmp, "bad.pt"))
	if err == nil || !strings.Contains(err.Error(), "vision_model.embeddings.position_embedding.weight") {
		t.Errorf("wrong --config: %v", err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "bad.pt")); err == nil {
		t.Error("bad.pt written despite the mismatch")
	}
	if _, _, err := runGoclip(t, "convert", fx, filepath.Join(tmp, "x.json")); err == nil {
		t.Error("unknown DST format accepted")
	}
}

// TestEmbedCommand: rows in input order and of shape (N, projection_dim), equal to the
// reference embeddings of the fixture's images and captions.
func TestEmbedCommand(t *testing.T) {
	fx := testutil.Fixtures(t)
	model := filepath.Join(fx, "clip-tiny-openai")
	images := filepath.Join(fx, "images")
	var inputs struct {
		Images   []string `json:"images"`
		Captions []string `json:"captions"`
	}
	data, err := os.ReadFile(filepath.Join(model, "inputs.json"))
	if err != nil || json.Unmarshal(data, &inputs) != nil {
		t.Fatalf("inputs.json: %v", err)
	}
	refShape, ref := testutil.ReadNpyFloat32(t, filepath.Join(model, "image_embeds.npy"))
	p := refShape[1]
	tmp := t.TempDir()

	// The fixture's images in its order (the JPEG differs from PIL's decode by a level
	// or so on a few pixels, hence the tolerance).
	args := []string{"embed", "--model", model, "--out", filepath.Join(tmp, "img.npy"), "--threads", "2"}
	for _, name := range inputs.Images {
		args = append(args, "--images", filepath.Join(images, name))
	}
	mustGoclip(t, args...)
	shape, got := testutil.ReadNpyFloat32(t, filepath.Join(tmp, "img.npy"))
	if !slices.Equal(shape, refShape) {
		t.Fatalf("shape %v, want %v", shape, refShape)
	}
	for i, name := range inputs.Images {
		if d := testutil.MaxAbsDiff(got[i*p:(i+1)*p], ref[i*p:(i+1)*p]); d > 2e-3 {
			t.Errorf("row %d (%s): max |diff| %g from image_embeds.npy", i, name, d)
		}
	}

	// A folder is its images in sorted name order; truncated.jpg fails naming itself,
	// or is skipped with --skip-bad.
	_, _, err = runGoclip(t, "embed", "--model", model, "--out", filepath.Join(tmp, "dir.npy"), "--images", images)
	if err == nil || !strings.Contains(err.Error(), "truncated.jpg") {
		t.Fatalf("folder with truncated.jpg: %v", err)
	}
	list := filepath.Join(tmp, "rows.txt")
	_, errOut, err := runGoclip(t, "embed", "--model", model, "--out", filepath.Join(tmp, "dir.npy"), "--skip-bad", "--list", list, "--batch-size", "3", "--images", images)
	if err != nil || !strings.Contains(errOut, "skipped 1") {
		t.Fatalf("--skip-bad: %v\n%s", err, errOut)
	}
	rows, _ := os.ReadFile(list)
	names := strings.Fields(string(rows))
	if !slices.IsSortedFunc(names, strings.Compare) || len(names) != 9 {
		t.Errorf("folder rows not in sorted order: %v", names)
	}
	shape, dir := testutil.ReadNpyFloat32(t, filepath.Join(tmp, "dir.npy"))
	if shape[0] != len(names) || shape[1] != p {
		t.Fatalf("folder shape %v", shape)
	}
	for i, name := range inputs.Images {
		j := slices.Index(names, filepath.Join(images, name))
		if j < 0 {
			t.Fatalf("%s missing from the folder rows", name)
		}
		if d := testutil.MaxAbsDiff(dir[j*p:(j+1)*p], got[i*p:(i+1)*p]); d > 1e-5 {
			t.Errorf("%s: folder row %d differs from the listed row %d by %g", name, j, i, d)
		}
	}

	// Texts, one per line, normalised.
	texts := filepath.Join(tmp, "captions.txt")
	if err := os.WriteFile(texts, []byte(strings.Join(inputs.Captions, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustGoclip(t, "embed", "--model", model, "--texts", texts, "--out", filepath.Join(tmp, "txt.npy"), "--normalize")
	shape, txt := testutil.ReadNpyFloat32(t, filepath.Join(tmp, "txt.npy"))
	refShape, refTxt := testutil.ReadNpyFloat32(t, filepath.Join(model, "text_embeds.npy"))
	if !slices.Equal(shape, refShape) {
		t.Fatalf("text shape %v, want %v", shape, refShape)
	}
	for i := range inputs.Captions {
		row, want := txt[i*p:(i+1)*p], slices.Clone(refTxt[i*p:(i+1)*p])
		var norm, wn float64
		for k := range row {
			norm += float64(row[k]) * float64(row[k])
			wn += float64(want[k]) * float64(want[k])
		}
		for k := range want {
			want[k] = float32(float64(want[k]) / math.Sqrt(wn))
		}
		if math.Abs(norm-1) > 1e-5 || testutil.MaxAbsDiff(row, want) > 1e-4 {
			t.Errorf("caption %d: norm² %g, max |diff| %g from text_embeds.npy", i, norm, testutil.MaxAbsDiff(row, want))
		}
	}
}

func TestZeroshotCommand(t *testing.T) {
	fx := testutil.Fixtures(t)
	model := filepath.Join(fx, "clip-tiny-openai")
	imgs := []string{filepath.Join(fx, "images", "rocket.jpg"), filepath.Join(fx, "images", "camera.png")}
	out := mustGoclip(t, append([]string{"zeroshot", "--model", model, "--classes", "cat,dog,rocket", "--json"}, imgs...)...)
	var res struct {
		Classes []string         `json:"classes"`
		Results []zeroshotResult `json:"results"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !slices.Equal(res.Classes, []string{"cat", "dog", "rocket"}) || len(res.Results) != 2 {
		t.Fatalf("zeroshot --json: %s", out)
	}
	for i, r := range res.Results {
		var sum float64
		for _, p := range r.Probabilities {
			sum += p
		}
		if r.Image != imgs[i] || len(r.Probabilities) != 3 || math.Abs(sum-1) > 1e-9 {
			t.Errorf("result %d: %+v (sum %g)", i, r, sum)
		}
	}
	table := mustGoclip(t, append([]string{"zeroshot", "--model", model, "--classes", "cat,dog,rocket", "--template", "a {}"}, imgs...)...)
	if !strings.Contains(table, imgs[0]) || strings.Count(table, "rocket") < 2 {
		t.Errorf("table output:\n%s", table)
	}
	if _, _, err := runGoclip(t, "zeroshot", "--model", model, "--classes", "a,b", "--template", "no placeholder", imgs[0]); err == nil {
		t.Error("template without {} accepted")
	}
	if _, _, err := runGoclip(t, "zeroshot", "--model", model, "--classes", "a,b", filepath.Join(fx, "images", "truncated.jpg")); err == nil || !strings.Contains(err.Error(), "truncated.jpg") {
		t.Errorf("truncated image: %v", err)
	}
}
