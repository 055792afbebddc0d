package main

// Tests of `goclip zeroshot --data DIR`: its accuracy against one computed here from
// `goclip embed` outputs (a separate image and text pipeline), and its errors.

import (
	"encoding/json"
	"image"
	_ "image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"goclip/internal/testutil"
	"goclip/train"
)

// zeroshotFolder writes an image folder of 7 classes (10 readable images and a
// truncated one) from the fixture images, with a classes.txt; it returns the folder,
// the class names, and each readable image with its class.
func zeroshotFolder(t *testing.T, fx string) (dir string, classes []string, images []string, labels []int) {
	dir = filepath.Join(t.TempDir(), "imagefolder")
	layout := []struct {
		folder, name string
		files        []string
	}{
		{"a_rocket", "rocket", []string{"rocket.jpg", "motorcycle_left.png"}},
		{"b_horse", "horse", []string{"horse.png"}},
		{"c_cat", "cat", []string{"chelsea.png", "coffee.png"}},
		{"d_cup", "coffee cup", []string{"coffee.png", "truncated.jpg"}},
		{"e_camera", "camera", []string{"camera.png"}},
		{"f_person", "astronaut", []string{"astronaut.png"}},
		{"g_logo", "logo", []string{"logo.png", "color.png"}},
	}
	for label, l := range layout {
		classes = append(classes, l.name)
		sub := filepath.Join(dir, l.folder)
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range l.files {
			data, err := os.ReadFile(filepath.Join(fx, "images", f))
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(sub, f)
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
			if f != "truncated.jpg" {
				images = append(images, p)
				labels = append(labels, label)
			}
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "classes.txt"), []byte(strings.Join(classes, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, classes, images, labels
}

func TestZeroshotDataMatchesEmbeddings(t *testing.T) {
	fx := testutil.Fixtures(t)
	model := filepath.Join(fx, "clip-tiny-openai")
	dir, classes, images, labels := zeroshotFolder(t, fx)
	tmp := t.TempDir()
	templates := []string{"a photo of a {}.", "a drawing of the {}", "itap of my {}."}
	tplFile := filepath.Join(tmp, "templates.txt")
	if err := os.WriteFile(tplFile, []byte(templates[0]+"\n\n"+templates[1]+"\n  "+templates[2]+"  \n"), 0o644); err != nil {
		t.Fatal(err)
	}

	out, errOut, err := runGoclip(t, "zeroshot", "--model", model, "--data", dir, "--templates", tplFile, "--json", "--batch-size", "4")
	if err != nil {
		t.Fatalf("zeroshot --data: %v\n%s", err, errOut)
	}
	if !strings.Contains(errOut, "truncated.jpg") {
		t.Errorf("the unreadable image is not reported on stderr: %q", errOut)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &fields); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, k := range []string{"top1", "top5", "classes", "images", "per_class"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("--json lacks %q: %s", k, out)
		}
	}
	var res train.ZeroshotResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}

	// The same from goclip embed's normalised rows, in float64 here.
	mustGoclip(t, append([]string{"embed", "--model", model, "--normalize", "--out", filepath.Join(tmp, "img.npy"), "--images"}, strings.Join(images, ","))...)
	var prompts []string
	for _, c := range classes {
		for _, tp := range templates {
			prompts = append(prompts, strings.Replace(tp, "{}", c, 1))
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, "prompts.txt"), []byte(strings.Join(prompts, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustGoclip(t, "embed", "--model", model, "--normalize", "--texts", filepath.Join(tmp, "prompts.txt"), "--out", filepath.Join(tmp, "txt.npy"))
	ishape, img := testutil.ReadNpyFloat32(t, filepath.Join(tmp, "img.npy"))
	tshape, txt := testutil.ReadNpyFloat32(t, filepath.Join(tmp, "txt.npy"))
	p := ishape[1]
	if ishape[0] != len(images) || tshape[0] != len(prompts) || tshape[1] != p {
		t.Fatalf("embed shapes %v %v", ishape, tshape)
	}
	k, nt := len(classes), len(templates)
	cls := make([][]float64, k) // mean over templates, normalised
	for c := range cls {
		cls[c] = make([]float64, p)
		for j := range nt {
			for d := range p {
				cls[c][d] += float64(txt[(c*nt+j)*p+d]) / float64(nt)
			}
		}
		var norm float64
		for _, v := range cls[c] {
			norm += v * v
		}
		for d := range cls[c] {
			cls[c][d] /= math.Sqrt(norm)
		}
	}
	type counts struct{ n, top1, top5 int }
	want := make([]counts, k)
	wantWrong := make([]map[string]int, k)
	var top1, top5 int
	minGap := math.Inf(1)
	for i, y := range labels {
		score := make([]float64, k)
		for c := range k {
			for d := range p {
				score[c] += float64(img[i*p+d]) * cls[c][d]
			}
		}
		above, best := 0, 0
		for c := range k {
			if c != y {
				minGap = math.Min(minGap, math.Abs(score[c]-score[y]))
			}
			if score[c] > score[y] {
				above++
			}
			if score[c] > score[best] {
				best = c
			}
		}
		want[y].n++
		if above == 0 {
			want[y].top1++
			top1++
		} else {
			if wantWrong[y] == nil {
				wantWrong[y] = map[string]int{}
			}
			wantWrong[y][classes[best]]++
		}
		if above < 5 {
			want[y].top5++
			top5++
		}
	}
	t.Logf("independent: top-1 %d/%d, top-5 %d/%d; smallest |score gap| to the true class %.2g", top1, len(labels), top5, len(labels), minGap)
	if top5 == len(labels) || top1 == 0 {
		t.Logf("note: top-5 or top-1 is trivial on this folder (%d, %d of %d)", top5, top1, len(labels))
	}
	n := float64(len(labels))
	if res.Images != len(labels) || res.Classes != k || res.Templates != nt || res.Top1 != float64(top1)/n || res.Top5 != float64(top5)/n {
		t.Fatalf("goclip: %+v; independent: %d images, %d classes, top-1 %g, top-5 %g", res, len(labels), k, float64(top1)/n, float64(top5)/n)
	}
	for c, name := range classes {
		got, ok := res.PerClass[name]
		w := want[c]
		if !ok || got.Images != w.n || got.Top1 != float64(w.top1)/float64(w.n) || got.Top5 != float64(w.top5)/float64(w.n) {
			t.Errorf("class %q: %+v, want %+v", name, got, w)
		}
		gotWrong := map[string]int{}
		for _, cf := range got.Confused {
			gotWrong[cf.Class] = cf.Count
		}
		if len(gotWrong) != len(wantWrong[c]) {
			t.Errorf("class %q confused with %v, want %v", name, gotWrong, wantWrong[c])
		}
		for cl, cnt := range wantWrong[c] {
			if gotWrong[cl] != cnt {
				t.Errorf("class %q confused with %v, want %v", name, gotWrong, wantWrong[c])
			}
		}
	}

	// The table, and the built-in templates.
	table := mustGoclip(t, "zeroshot", "--model", model, "--data", dir, "--templates", tplFile)
	if !strings.Contains(table, "top-1") || !strings.Contains(table, res.WorstClasses(1)[0]) {
		t.Errorf("table:\n%s", table)
	}
	out = mustGoclip(t, "zeroshot", "--model", model, "--data", dir, "--json")
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Templates != 80 || res.Images != len(labels) {
		t.Errorf("built-in templates: %v %s", err, out)
	}
}

func TestZeroshotDataErrors(t *testing.T) {
	fx := testutil.Fixtures(t)
	model := filepath.Join(fx, "clip-tiny-openai")
	dir, _, images, _ := zeroshotFolder(t, fx)
	tmp := t.TempDir()
	bad := filepath.Join(tmp, "bad.txt")
	if err := os.WriteFile(bad, []byte("a photo of a {}.\nno placeholder\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--data", dir, "--templates", bad}, "bad.txt:2"},
		{[]string{"--data", dir, "--templates", filepath.Join(tmp, "absent.txt")}, "absent.txt"},
		{[]string{"--data", dir, "--classes", "a,b"}, "--data"},
		{[]string{"--data", dir, images[0]}, "--data"},
		{[]string{"--classes", "a,b", "--templates", bad, images[0]}, "--templates"},
		{[]string{"--data", filepath.Join(tmp, "nothing")}, "nothing"},
		{[]string{images[0]}, "--classes"},
	}
	for _, c := range cases {
		_, _, err := runGoclip(t, append([]string{"zeroshot", "--model", model}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("zeroshot %v: %v, want an error naming %q", c.args, err, c.want)
		}
	}
	// A classes.txt naming too few classes, and a class folder without images.
	if err := os.WriteFile(filepath.Join(dir, "classes.txt"), []byte("one\ntwo\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runGoclip(t, "zeroshot", "--model", model, "--data", dir); err == nil || !strings.Contains(err.Error(), "classes.txt") {
		t.Errorf("short classes.txt: %v", err)
	}
	os.Remove(filepath.Join(dir, "classes.txt"))
	if err := os.Mkdir(filepath.Join(dir, "h_empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runGoclip(t, "zeroshot", "--model", model, "--data", dir); err == nil || !strings.Contains(err.Error(), "h_empty") {
		t.Errorf("empty class folder: %v", err)
	}
}

// train --zeroshot-data on a synth --layout imagefolder set: zeroshot_top1/top5 rows at
// every --zeroshot-every step and the last, equal at the last step to goclip zeroshot
// on the saved model; a resumed finished run measures no step again.
func TestTrainZeroshotRows(t *testing.T) {
	data := tinyData(t)
	tmp := t.TempDir()
	zs := filepath.Join(tmp, "classes")
	mustGoclip(t, "synth", "--out", zs, "--images", "24", "--size", "32", "--seed", "4", "--layout", "imagefolder")
	tpl := filepath.Join(tmp, "templates.txt")
	if err := os.WriteFile(tpl, []byte("a {}\na picture of a {}.\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(tmp, "run")
	if _, _, err := runGoclip(t, tinyTrainArgs(data, run, "--max-steps", "5", "--zeroshot-every", "2")...); err == nil || !strings.Contains(err.Error(), "--zeroshot-data") {
		t.Fatalf("--zeroshot-every without --zeroshot-data: %v", err)
	}
	mustGoclip(t, tinyTrainArgs(data, run, "--max-steps", "5", "--log-every", "1", "--zeroshot-data", zs, "--zeroshot-every", "2", "--zeroshot-templates", tpl)...)
	var steps []float64
	var last map[string]any
	for _, r := range metricRows(t, run) {
		if _, ok := r["zeroshot_top1"]; ok {
			steps = append(steps, r["step"].(float64))
			last = r
			for _, k := range []string{"zeroshot_top1", "zeroshot_top5"} {
				if v, ok := r[k].(float64); !ok || v < 0 || v > 1 {
					t.Errorf("step %v: %s = %v", r["step"], k, r[k])
				}
			}
		}
	}
	if len(steps) != 3 || steps[0] != 2 || steps[1] != 4 || steps[2] != 5 {
		t.Fatalf("zero-shot rows at steps %v, want 2, 4, 5", steps)
	}
	// learning_curve.png has the loss, recall and zero-shot panels (4 inches each at 96 dpi).
	png, err := os.Open(filepath.Join(run, "learning_curve.png"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, err := image.DecodeConfig(png)
	png.Close()
	if err != nil || cfg.Height != 3*4*96 {
		t.Errorf("learning_curve.png: %+v %v, want 3 panels of 384 pixels", cfg, err)
	}
	out := mustGoclip(t, "zeroshot", "--model", run, "--data", zs, "--templates", tpl, "--json")
	var res train.ZeroshotResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if res.Top1 != last["zeroshot_top1"] || res.Top5 != last["zeroshot_top5"] || res.Images != 24 {
		t.Errorf("goclip zeroshot on the saved model: %+v; the run's last row: %v", res, last)
	}
	n := len(metricRows(t, run))
	mustGoclip(t, "train", "--out", run, "--resume")
	if m := len(metricRows(t, run)); m != n {
		t.Errorf("resuming the finished run changed metrics.jsonl from %d to %d rows", n, m)
	}
}
