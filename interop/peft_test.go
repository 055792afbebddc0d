package interop

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"goclip/torch/serialize"
)

// peftModules are what the peft side imports.
var peftModules = append(append([]string{}, hfModules...), "peft")

// weightsDiff compares two safetensors files key by key: an error for a key missing
// on either side, a shape or a dtype other than F32, and the worst relative error
// (testutil.RelErr) of a tensor, with its key.
func weightsDiff(t *testing.T, what, gotPath, wantPath string) (float64, string) {
	t.Helper()
	got, _, err := serialize.ReadSafetensors(gotPath)
	if err != nil {
		t.Fatal(err)
	}
	want, _, err := serialize.ReadSafetensors(wantPath)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range want {
		if !strings.HasSuffix(k, ".position_ids") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	worst, worstKey := -1.0, ""
	for _, k := range keys {
		g, ok := got[k]
		if !ok {
			t.Errorf("%s: %s missing", what, k)
			continue
		}
		w := want[k]
		if g.DType != serialize.F32 || w.DType != serialize.F32 {
			t.Fatalf("%s: %s is %s and %s, want F32", what, k, g.DType, w.DType)
		}
		if !equalShapes(g.Shape, w.Shape) {
			t.Errorf("%s: %s has shape %v, want %v", what, k, g.Shape, w.Shape)
			continue
		}
		if e := relErr(float32s(g.Data), float32s(w.Data)); e > worst {
			worst, worstKey = e, k
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok && !strings.HasSuffix(k, ".position_ids") {
			t.Errorf("%s: unexpected key %s", what, k)
		}
	}
	t.Logf("%s: %d tensors, worst relative error %.3g (%s)", what, len(keys), worst, worstKey)
	return worst, worstKey
}

// checkSameWeights fails the test when a tensor of gotPath differs from wantPath's by
// more than tol relative (see weightsDiff), and when the merge under test is invisible:
// gotPath must differ from basePath by more than 1000 * tol in some tensor.
func checkSameWeights(t *testing.T, what, gotPath, wantPath, basePath string, tol float64) {
	t.Helper()
	if worst, key := weightsDiff(t, what, gotPath, wantPath); worst > tol {
		t.Errorf("%s: %s differs by %.3g relative (tolerance %.0e)", what, key, worst, tol)
	}
	if moved, _ := weightsDiff(t, what+" (against the base)", gotPath, basePath); moved < 1000*tol {
		t.Errorf("%s: the merged weights are within %.3g of the base's: a merge that did nothing would pass", what, moved)
	}
}

// float32s decodes little-endian float32 bytes.
func float32s(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

func equalShapes(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestPeftAdapterInGoclip: adapters made by peft (get_peft_model with LoraConfig, lora_B
// drawn non-zero, save_pretrained) give in goclip embed --adapter and eval --adapter
// what PeftModel gives (1e-5 relative), and peft's merge_and_unload() equals goclip
// convert --adapter --merge (1e-6 relative per tensor). Two adapters: a list of targets
// in both towers with dropout (off at inference), and a regular expression with
// use_rslora.
func TestPeftAdapterInGoclip(t *testing.T) {
	c := smallCase(t)
	for _, a := range []struct {
		name string
		args []string
	}{
		{"list", []string{"--r", "4", "--alpha", "12", "--dropout", "0.1", "--targets", "q_proj,k_proj,v_proj,out_proj,fc1,fc2"}},
		{"regex-rslora", []string{"--r", "6", "--alpha", "9", "--rslora", "--regex",
			"--targets", `.*vision_model\.encoder\.layers\.1\..*(q_proj|v_proj)|.*text_model.*fc2|visual_projection`}},
	} {
		t.Run(a.name, func(t *testing.T) {
			dir := t.TempDir()
			adapter := filepath.Join(dir, "adapter")
			out := python(t, peftModules, append([]string{"make-adapter", "--model", c.model, "--out", adapter, "--seed", "3"}, a.args...)...)
			t.Logf("peft adapter: %s", lastLine(out))
			ref, merged := filepath.Join(dir, "ref"), filepath.Join(dir, "peft-merged")
			spec := filepath.Join(c.data, "eval-spec.json")
			python(t, peftModules, "reference", "--model", c.model, "--adapter", adapter, "--images", strings.Join(c.images, ","),
				"--texts", c.texts, "--eval", spec, "--merged-out", merged, "--out", ref)

			img := goclipEmbed(t, filepath.Join(dir, "img.npy"), "--model", c.model, "--adapter", adapter, "--images", strings.Join(c.images, ","))
			want, _ := readMatrix(t, filepath.Join(ref, "image_embeds_pil.npy"))
			checkClose(t, "embed --adapter --images vs PeftModel", img, want, fp32Tol)
			base, _ := readMatrix(t, filepath.Join(c.ref, "image_embeds_pil.npy"))
			if e := relErr(want, base); e < 1e-3 {
				t.Errorf("the adapter moves the image embeddings by only %.3g: it would not be seen", e)
			}
			txt := goclipEmbed(t, filepath.Join(dir, "txt.npy"), "--model", c.model, "--adapter", adapter, "--texts", c.texts)
			want, _ = readMatrix(t, filepath.Join(ref, "text_embeds.npy"))
			checkClose(t, "embed --adapter --texts vs PeftModel", txt, want, fp32Tol)
			checkEval(t, "eval --adapter vs PeftModel", goclipEval(t, "--model", c.model, "--adapter", adapter, "--data", c.data),
				readEval(t, filepath.Join(ref, "eval.json"))["pil"], fp32Tol)

			conv := filepath.Join(dir, "goclip-merged")
			goclip(t, "convert", "--adapter", adapter, "--merge", c.model, conv)
			checkSameWeights(t, "goclip convert --merge vs peft merge_and_unload", filepath.Join(conv, "model.safetensors"),
				filepath.Join(merged, "model.safetensors"), filepath.Join(c.model, "model.safetensors"), 1e-6)
		})
	}
}

// TestGoclipAdapterInPeft: the adapter/ of a goclip fine-tune loads with
// PeftModel.from_pretrained on the base model and gives goclip's outputs (embed and eval
// with --adapter) within 1e-5 relative; peft's merge_and_unload() of it equals the
// run's merged model/ and goclip convert --adapter --merge (1e-6 per tensor).
func TestGoclipAdapterInPeft(t *testing.T) {
	c := smallCase(t)
	dir := t.TempDir()
	run := smallFinetune(t)
	adapter := filepath.Join(run, "adapter")
	raw, err := os.ReadFile(filepath.Join(adapter, "adapter_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var acfg map[string]any
	if err := json.Unmarshal(raw, &acfg); err != nil {
		t.Fatal(err)
	}
	t.Logf("goclip's adapter_config.json: %s", raw)

	ref, merged := filepath.Join(dir, "ref"), filepath.Join(dir, "peft-merged")
	spec := filepath.Join(c.data, "eval-spec.json")
	python(t, peftModules, "reference", "--model", c.model, "--adapter", adapter, "--images", strings.Join(c.images, ","),
		"--texts", c.texts, "--eval", spec, "--merged-out", merged, "--out", ref)
	info := readInfo(t, ref)
	if n, _ := info["adapter_modules"].(float64); n == 0 {
		t.Errorf("PeftModel.from_pretrained injected no LoRA modules: %v", info)
	}

	img := goclipEmbed(t, filepath.Join(dir, "img.npy"), "--model", c.model, "--adapter", adapter, "--images", strings.Join(c.images, ","))
	want, _ := readMatrix(t, filepath.Join(ref, "image_embeds_pil.npy"))
	checkClose(t, "goclip embed --adapter vs PeftModel.from_pretrained(goclip's adapter): images", img, want, fp32Tol)
	base, _ := readMatrix(t, filepath.Join(c.ref, "image_embeds_pil.npy"))
	if e := relErr(want, base); e < 1e-3 {
		t.Errorf("goclip's adapter moves the image embeddings by only %.3g: the fine-tune did not train it", e)
	}
	mergedImg := goclipEmbed(t, filepath.Join(dir, "img-merged.npy"), "--model", filepath.Join(run, "model"), "--images", strings.Join(c.images, ","))
	checkClose(t, "goclip's merged model/ vs PeftModel: images", mergedImg, want, fp32Tol)
	txt := goclipEmbed(t, filepath.Join(dir, "txt.npy"), "--model", c.model, "--adapter", adapter, "--texts", c.texts)
	want, _ = readMatrix(t, filepath.Join(ref, "text_embeds.npy"))
	checkClose(t, "goclip embed --adapter vs PeftModel: texts", txt, want, fp32Tol)
	checkEval(t, "goclip eval --adapter vs PeftModel", goclipEval(t, "--model", c.model, "--adapter", adapter, "--data", c.data),
		readEval(t, filepath.Join(ref, "eval.json"))["pil"], fp32Tol)

	checkSameWeights(t, "run's model/ vs peft merge_and_unload", filepath.Join(run, "model", "model.safetensors"),
		filepath.Join(merged, "model.safetensors"), filepath.Join(c.model, "model.safetensors"), 1e-6)
	conv := filepath.Join(dir, "goclip-merged")
	goclip(t, "convert", "--adapter", adapter, "--merge", c.model, conv)
	checkSameWeights(t, "goclip convert --merge vs peft merge_and_unload", filepath.Join(conv, "model.safetensors"),
		filepath.Join(merged, "model.safetensors"), filepath.Join(c.model, "model.safetensors"), 1e-6)
}
