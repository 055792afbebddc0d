package dataset

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"goclip/internal/testutil"
)

// tableFixture writes images a.png, sub/b.png and, in a second folder, c.png (absolute
// paths point at it), and returns the data folder and the other folder.
func tableFixture(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	other := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "a.png"), solidPNG(t, 1, 4, 4), 0o644)
	os.WriteFile(filepath.Join(dir, "sub", "b.png"), solidPNG(t, 2, 4, 4), 0o644)
	os.WriteFile(filepath.Join(other, "c.png"), solidPNG(t, 3, 4, 4), 0o644)
	return dir, other
}

func captionsByName(ds *Dataset) map[string]string {
	out := map[string]string{}
	for _, it := range ds.Items {
		out[it.Name+" -> "+it.Image] = strings.Join(it.Captions, "|")
	}
	return out
}

// TestOpenTableTSV reads a TSV with open_clip's default keys, and checks its rows
// against Python's csv module reading the same file.
func TestOpenTableTSV(t *testing.T) {
	dir, other := tableFixture(t)
	c := filepath.Join(other, "c.png")
	tsv := "id\tfilepath\ttitle\n" +
		"1\ta.png\ta red square\n" +
		"2\tsub/b.png\t\"quoted, with a\ttab\"\n" +
		"3\ta.png\tsecond caption of a\n" +
		"4\t" + c + "\tabsolute path\n" +
		"5\tmissing.png\tno such image\n" +
		"6\t../escape.png\tleaves the folder\n"
	file := filepath.Join(dir, "train.tsv")
	os.WriteFile(file, []byte(tsv), 0o644)
	if k := SourceKind(file); k != SourceTable {
		t.Fatalf("SourceKind %s", k)
	}
	ds, err := OpenTable(file, TableOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := captionsByName(ds)
	want := map[string]string{
		"a.png -> " + filepath.Join(dir, "a.png"):         "a red square|second caption of a",
		"sub/b.png -> " + filepath.Join(dir, "sub/b.png"): "quoted, with a\ttab",
		c + " -> " + c: "absolute path",
	}
	if len(got) != len(want) {
		t.Fatalf("items %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}
	if ds.Report.SkippedFor(MissingImage) != 1 || ds.Report.SkippedFor(Malformed) != 1 {
		t.Errorf("report: %s", ds.Report.Summary())
	}

	// Python's csv module reads the same rows (image, caption) from the file.
	py := testutil.PythonTorch(t)
	cmd := exec.Command(py, "-c", `import csv, sys, json
print(json.dumps([[r["filepath"], r["title"]] for r in csv.DictReader(open(sys.argv[1], newline=""), delimiter="\t")]))`, file)
	cmd.Dir = os.TempDir()
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	var rows [][2]string
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatal(err)
	}
	var rep Report
	f, _ := os.Open(file)
	items, err := readDelimited(f, file, &rep, tableKeys{image: "filepath", caption: "title", sep: '\t', nameOK: func(string) bool { return true }})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	var ours [][2]string
	for _, it := range items {
		for _, c := range it.Captions {
			ours = append(ours, [2]string{it.Name, c})
		}
	}
	byName := map[string][]string{}
	for _, r := range rows {
		byName[r[0]] = append(byName[r[0]], strings.TrimSpace(r[1]))
	}
	if len(ours) != len(rows) {
		t.Fatalf("%d rows, python's csv %d", len(ours), len(rows))
	}
	for _, o := range ours {
		if !strings.Contains(strings.Join(byName[o[0]], "\x00")+"\x00", o[1]+"\x00") {
			t.Errorf("row %v not in python's %v", o, byName[o[0]])
		}
	}
}

func TestOpenTableCSVAndJSONL(t *testing.T) {
	dir, other := tableFixture(t)
	c := filepath.Join(other, "c.png")
	// --csv-separator ";" and custom keys; with --data-root other: relative paths start
	// there and absolute ones must lie in it.
	csv := "url;text\nc.png;relative to the root\n" + c + ";absolute within the root\n" + filepath.Join(dir, "a.png") + ";outside the root\n"
	file := filepath.Join(dir, "list.csv")
	os.WriteFile(file, []byte(csv), 0o644)
	ds, err := OpenTable(file, TableOptions{ImageKey: "url", CaptionKey: "text", Separator: ";", Root: other})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds.Items) != 1 || ds.Items[0].Image != c || strings.Join(ds.Items[0].Captions, "|") != "relative to the root|absolute within the root" {
		t.Errorf("items %+v", ds.Items)
	}
	if ds.Report.SkippedFor(Malformed) != 1 || !strings.Contains(ds.Report.Summary(), "line 4") {
		t.Errorf("report: %s", ds.Report.Summary())
	}
	if _, err := OpenTable(file, TableOptions{}); err == nil || !strings.Contains(err.Error(), `"filepath"`) {
		t.Errorf("default keys on a file without them: %v", err)
	}
	if _, err := OpenTable(file, TableOptions{Separator: ";;"}); err == nil || !strings.Contains(err.Error(), "--csv-separator") {
		t.Errorf("bad separator: %v", err)
	}

	jl := `{"filepath": "a.png", "title": "from jsonl"}` + "\n" + `{"filepath": "sub/b.png", "title": "caption \u00e9"}` + "\n" +
		`{"filepath": "a.png"}` + "\n" + "{\"filepath\": \"sub/b.png\", \"title\": \"bad \xff\"}\n"
	jfile := filepath.Join(dir, "train.jsonl")
	os.WriteFile(jfile, []byte(jl), 0o644)
	ds, err = OpenTable(jfile, TableOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := captionsByName(ds)
	if len(got) != 2 || got["a.png -> "+filepath.Join(dir, "a.png")] != "from jsonl" || got["sub/b.png -> "+filepath.Join(dir, "sub/b.png")] != "caption é" {
		t.Errorf("jsonl items %v", got)
	}
	if ds.Report.SkippedFor(Malformed) != 1 || ds.Report.SkippedFor(NonUTF8Caption) != 1 {
		t.Errorf("jsonl report: %s", ds.Report.Summary())
	}
}
