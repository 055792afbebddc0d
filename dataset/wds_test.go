package dataset

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"goclip/internal/testutil"
)

// solidPNG is a w x h PNG of one colour, the colour of sample i.
func solidPNG(t testing.TB, i, w, h int) []byte {
	t.Helper()
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	c := sampleColour(i)
	for p := 0; p < len(m.Pix); p += 4 {
		m.Pix[p], m.Pix[p+1], m.Pix[p+2], m.Pix[p+3] = c[0], c[1], c[2], 255
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, m); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sampleColour(i int) [3]uint8 { return [3]uint8{uint8(7 * i), uint8(255 - 5*i), uint8(60 + 3*i)} }

func solidJPEG(t testing.TB, i, w, h int) []byte {
	t.Helper()
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	c := sampleColour(i)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			m.Set(x, y, color.RGBA{c[0], c[1], c[2], 255})
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, m, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// writeTestShards writes nShards shards of perShard samples "s%04d", sample i with
// caption "caption %d" (txt for even i, with a json without the caption field, or
// with another caption for i%4 == 0; a json "caption" field for odd i) and a PNG of
// sampleColour(i).
func writeTestShards(t testing.TB, dir string, nShards, perShard int) []string {
	t.Helper()
	w, err := NewShardWriter(dir, "part", perShard)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < nShards*perShard; i++ {
		m := map[string][]byte{"png": solidPNG(t, i, 12, 10)}
		meta, _ := json.Marshal(map[string]any{"caption": fmt.Sprintf("caption %d", i), "url": "http://x/" + fmt.Sprint(i), "width": 12})
		if i%2 == 0 { // a txt; the json's caption, when there is one, is not used
			m["txt"] = []byte(fmt.Sprintf("caption %d", i))
			meta, _ = json.Marshal(map[string]any{"status": "success"})
			if i%4 == 0 {
				meta, _ = json.Marshal(map[string]any{"caption": "not this one", "status": "success"})
			}
		}
		m["json"] = meta
		if err := w.Add(fmt.Sprintf("s%04d", i), m); err != nil {
			t.Fatal(err)
		}
	}
	paths, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	return paths
}

// epochKeys reads a whole epoch from StartAt(p), returning the batches' keys and
// captions, and checks that every image shows its caption's colour.
func epochKeys(t *testing.T, l *StreamLoader, p Position) (batches [][]string, last []Position) {
	t.Helper()
	if err := l.StartAt(p); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for {
		b, err := l.Next(ctx)
		if err == io.EOF {
			return batches, last
		}
		if err != nil {
			t.Fatal(err)
		}
		s := b.Size
		for j, c := range b.Captions {
			var i int
			if _, err := fmt.Sscanf(c, "caption %d", &i); err != nil {
				t.Fatalf("caption %q", c)
			}
			if !strings.HasSuffix(b.Keys[j], fmt.Sprintf(":s%04d", i)) {
				t.Fatalf("batch %d: key %s with caption %q", b.Index, b.Keys[j], c)
			}
			px := b.PixelsU8[j*3*s*s : j*3*s*s+3]
			if col := sampleColour(i); px[0] != col[0] || px[1] != col[1] || px[2] != col[2] {
				t.Fatalf("%s: pixel %v, want the colour %v of its caption", b.Keys[j], px, col)
			}
		}
		batches = append(batches, append([]string(nil), b.Keys...))
		last = append(last, b.Next)
		b.Release()
	}
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func streamOpts() LoaderOptions {
	return LoaderOptions{Size: 8, BatchSize: 4, Workers: 2, Seed: 3, Shuffle: true, DropLast: true, Uint8: true}
}

func flat(b [][]string) []string {
	var out []string
	for _, x := range b {
		out = append(out, x...)
	}
	return out
}

func TestExpandBracesMatchesPython(t *testing.T) {
	py := testutil.PythonTorch(t, "braceexpand")
	for _, pat := range []string{"data/{00000..00003}.tar", "a{1..3}b{x,yy}.tar", "{8..11}.tar", "{3..1}", "plain.tar", "{007..010}"} {
		got, err := ExpandBraces(pat)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(py, "-c", "import sys, json, braceexpand; print(json.dumps(list(braceexpand.braceexpand(sys.argv[1]))))", pat)
		cmd.Dir = os.TempDir()
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		if err := json.Unmarshal(out, &want); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: %v, braceexpand gives %v", pat, got, want)
		}
	}
	for _, bad := range []string{"a{1..3", "a}b", "{x..3}"} {
		if _, err := ExpandBraces(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func TestOpenShardsForms(t *testing.T) {
	dir := t.TempDir()
	paths := writeTestShards(t, dir, 3, 2)
	list := filepath.Join(dir, "list.txt")
	os.WriteFile(list, []byte("# shards\npart-000000.tar\n\n"+paths[1]+"\npart-{000002..000002}.tar\n"), 0o644)
	for _, spec := range []string{dir, filepath.Join(dir, "part-{000000..000002}.tar"), list,
		paths[0] + "::" + filepath.Join(dir, "part-{000001..000002}.tar")} {
		if k := SourceKind(spec); k != SourceShards {
			t.Errorf("SourceKind(%s) = %s", spec, k)
		}
		sh, err := OpenShards(spec, ShardOptions{})
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		if !slices.Equal(sh.Paths, paths) {
			t.Errorf("%s: %v, want %v", spec, sh.Paths, paths)
		}
		if n, err := sh.EpochSamples(); err != nil || n != 6 {
			t.Errorf("%s: %d samples (%v), want 6 from sizes.json", spec, n, err)
		}
	}
	if _, err := OpenShards(filepath.Join(dir, "part-{000000..000005}.tar"), ShardOptions{}); err == nil || !strings.Contains(err.Error(), "part-000003.tar") {
		t.Errorf("missing shard: %v", err)
	}
	os.Remove(filepath.Join(dir, SizesFile))
	sh, err := OpenShards(dir, ShardOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sh.EpochSamples(); err == nil || !strings.Contains(err.Error(), "--train-num-samples") {
		t.Errorf("no sizes: %v", err)
	}
}

// TestStreamEpoch: one process sees every sample once per epoch, each image with its
// own caption (txt, or the json field when there is no txt), in an order that depends
// on the seed and the epoch but not on the number of workers.
func TestStreamEpoch(t *testing.T) {
	dir := t.TempDir()
	writeTestShards(t, dir, 4, 5)
	sh, err := OpenShards(dir, ShardOptions{ShuffleBuffer: 6})
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewStreamLoader(sh, streamOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Len() != 5 {
		t.Fatalf("Len %d, want 20/4", l.Len())
	}
	b0, _ := epochKeys(t, l, Position{})
	keys := flat(b0)
	if len(b0) != 5 || len(keys) != 20 {
		t.Fatalf("%d batches, %d samples", len(b0), len(keys))
	}
	sorted := slices.Clone(keys)
	sort.Strings(sorted)
	if len(slices.Compact(sorted)) != 20 {
		t.Fatalf("repeated samples: %v", keys)
	}
	b1, _ := epochKeys(t, l, Position{Epoch: 1})
	if slices.Equal(flat(b1), keys) {
		t.Error("epoch 1 has epoch 0's order")
	}
	o := streamOpts()
	o.Workers = 1
	l1, _ := NewStreamLoader(sh, o)
	defer l1.Close()
	if again, _ := epochKeys(t, l1, Position{}); !slices.Equal(flat(again), keys) {
		t.Errorf("1 worker: %v, 2 workers: %v", flat(again), keys)
	}
	// The shuffle buffer mixes shards: not every batch comes from one shard.
	mixed := false
	for _, b := range b0 {
		for _, k := range b {
			if k[:16] != b[0][:16] {
				mixed = true
			}
		}
	}
	if !mixed {
		t.Errorf("no batch mixes shards: %v", b0)
	}
}

// TestStreamRanks: two ranks' shares are disjoint, together every sample once, each
// batch holding a rank's rows of the global batch.
func TestStreamRanks(t *testing.T) {
	dir := t.TempDir()
	writeTestShards(t, dir, 4, 3)
	sh, err := OpenShards(filepath.Join(dir, "part-{000000..000003}.tar"), ShardOptions{ShuffleBuffer: 4})
	if err != nil {
		t.Fatal(err)
	}
	var all []string
	for r := 0; r < 2; r++ {
		o := streamOpts()
		o.Rank, o.World = r, 2
		l, err := NewStreamLoader(sh, o)
		if err != nil {
			t.Fatal(err)
		}
		bs, next := epochKeys(t, l, Position{Epoch: 2})
		l.Close()
		if len(bs) != 3 {
			t.Fatalf("rank %d: %d batches, want 12/4", r, len(bs))
		}
		for j, b := range bs {
			if len(b) != 2 {
				t.Fatalf("rank %d batch %d: %d samples, want its share 2", r, j, len(b))
			}
			if next[j] != (Position{Epoch: 2, Batch: j + 1, Sample: 4 * (j + 1)}) {
				t.Errorf("rank %d batch %d: Next %+v", r, j, next[j])
			}
		}
		all = append(all, flat(bs)...)
	}
	sort.Strings(all)
	if len(slices.Compact(slices.Clone(all))) != 12 || len(all) != 12 {
		t.Fatalf("ranks' samples are not disjoint and complete: %v", all)
	}
	// Too few shards for the ranks is an error naming them.
	sh1, _ := OpenShards(filepath.Join(dir, "part-000000.tar"), ShardOptions{NumSamples: 3})
	o := streamOpts()
	o.Rank, o.World = 1, 2
	if _, err := NewStreamLoader(sh1, o); err == nil || !strings.Contains(err.Error(), "1 shards for 2 ranks") {
		t.Errorf("1 shard, 2 ranks: %v", err)
	}
}

// corruptShards writes shards with bad samples: a truncated PNG, a sample without a
// caption, a non-UTF-8 caption, a json without the caption field, a sample without an
// image, and a third shard cut off in the middle of a member.
func corruptShards(t *testing.T, dir string) {
	t.Helper()
	writeTestShards(t, dir, 3, 6)
	rewrite := func(name string, edit func(key, ext string, data []byte) ([]byte, bool)) {
		p := filepath.Join(dir, name)
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		tw := tar.NewWriter(&out)
		tr := tar.NewReader(bytes.NewReader(raw))
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(tr)
			key, ext, _ := splitMemberName(h.Name)
			data, keep := edit(key, ext, data)
			if !keep {
				continue
			}
			h.Size = int64(len(data))
			tw.WriteHeader(h)
			tw.Write(data)
		}
		tw.Close()
		os.WriteFile(p, out.Bytes(), 0o644)
	}
	rewrite("part-000000.tar", func(key, ext string, data []byte) ([]byte, bool) {
		switch {
		case key == "s0000" && ext == "png":
			return data[:len(data)/2], true // truncated image
		case key == "s0002" && ext == "txt":
			return nil, false // no txt: the json has no usable caption
		case key == "s0004" && ext == "txt":
			return []byte("caption \xff\xfe"), true // not UTF-8
		}
		return data, true
	})
	rewrite("part-000001.tar", func(key, ext string, data []byte) ([]byte, bool) {
		switch {
		case key == "s0007" && ext == "json":
			return []byte(`{"text": "caption 7"}`), true // no "caption" field
		case key == "s0009" && ext == "png":
			return nil, false // no image
		}
		return data, true
	})
	// Shard 2 (s0012..s0017): garbage over the header of s0015's first member.
	p := filepath.Join(dir, "part-000002.tar")
	sc, err := openScanner(p, 2)
	if err != nil {
		t.Fatal(err)
	}
	for {
		s, ok := sc.next()
		if !ok {
			t.Fatal("no s0015")
		}
		if s.key == "s0015" {
			sc.close()
			raw, _ := os.ReadFile(p)
			copy(raw[s.jsn.off-512:s.jsn.off], bytes.Repeat([]byte{0xab}, 512))
			os.WriteFile(p, raw, 0o644)
			return
		}
	}
}

func TestStreamBadMembers(t *testing.T) {
	dir := t.TempDir()
	corruptShards(t, dir)
	sh, err := OpenShards(dir, ShardOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var rep Report
	o := streamOpts()
	o.Report = &rep
	o.DropLast = false
	l, err := NewStreamLoader(sh, o)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	bs, _ := epochKeys(t, l, Position{})
	keys := flat(bs)
	for _, bad := range []string{"s0000", "s0002", "s0004", "s0007", "s0009"} {
		for _, k := range keys {
			if strings.HasSuffix(k, ":"+bad) {
				t.Errorf("bad sample %s served", bad)
			}
		}
	}
	// Shard 2 holds s0012..s0017; the samples before the damage are served.
	got := 0
	for _, k := range keys {
		if strings.HasPrefix(k, "part-000002.tar:") {
			got++
		}
	}
	if got != 3 || len(keys) != 18-5-3 {
		t.Errorf("%d samples (%d of the corrupt shard, want 3): %v", len(keys), got, keys)
	}
	want := map[Reason]int{UnreadableImage: 1, NoCaptions: 2, NonUTF8Caption: 1, MissingImage: 1, CorruptShard: 1}
	for r, n := range want {
		if rep.SkippedFor(r) != n {
			t.Errorf("%s: %d, want %d (%s)", r, rep.SkippedFor(r), n, rep.Summary())
		}
	}
	sum := rep.Summary()
	for _, name := range []string{"part-000000.tar:s0000", "part-000000.tar:s0002", "part-000000.tar:s0004", "part-000001.tar:s0007", "part-000001.tar:s0009", "part-000002.tar"} {
		if !strings.Contains(sum, name) {
			t.Errorf("summary does not name %s: %s", name, sum)
		}
	}
	// A second epoch counts nothing again.
	epochKeys(t, l, Position{Epoch: 1})
	if n, _ := l.Skipped(); n != 6 || rep.Skipped() != 6 {
		t.Errorf("after two epochs: %d skipped, report %d; want 6", n, rep.Skipped())
	}
}

// TestStreamResume: starting at any batch's Next serves exactly the batches that
// followed it, with a shuffle buffer and bad samples before the resume point, in one
// process and in each of two ranks.
func TestStreamResume(t *testing.T) {
	dir := t.TempDir()
	corruptShards(t, dir)
	for _, world := range []int{1, 2} {
		for _, resampled := range []bool{false, true} {
			sh, err := OpenShards(dir, ShardOptions{ShuffleBuffer: 5, Resampled: resampled, NumSamples: 16})
			if err != nil {
				t.Fatal(err)
			}
			for r := 0; r < world; r++ {
				o := streamOpts()
				o.Rank, o.World = r, world
				l, err := NewStreamLoader(sh, o)
				if err != nil {
					t.Fatal(err)
				}
				full, next := epochKeys(t, l, Position{Epoch: 1})
				if len(full) < 2 {
					t.Fatalf("world %d rank %d resampled %v: %d batches", world, r, resampled, len(full))
				}
				for k := 1; k < len(full); k++ {
					rest, _ := epochKeys(t, l, next[k-1])
					if !slices.Equal(flat(rest), flat(full[k:])) {
						t.Fatalf("world %d rank %d resampled %v: resumed after batch %d: %v, want %v", world, r, resampled, k, rest, full[k:])
					}
				}
				l.Close()
			}
		}
	}
}

// TestStreamResampled: an epoch of NumSamples samples drawn from shards chosen with
// replacement, reproducible from the seed.
func TestStreamResampled(t *testing.T) {
	dir := t.TempDir()
	writeTestShards(t, dir, 3, 2)
	sh, _ := OpenShards(dir, ShardOptions{Resampled: true, NumSamples: 24})
	l, err := NewStreamLoader(sh, streamOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, _ := epochKeys(t, l, Position{})
	b, _ := epochKeys(t, l, Position{})
	if len(a) != 6 || !slices.Equal(flat(a), flat(b)) {
		t.Fatalf("%d batches; repeat equal: %v", len(a), slices.Equal(flat(a), flat(b)))
	}
	count := map[string]int{}
	for _, k := range flat(a) {
		count[k]++
	}
	if len(count) > 6 || len(count) < 2 {
		t.Errorf("distinct samples %d: %v", len(count), count)
	}
}

// TestStreamReadsPythonShards reads shards written by Python's webdataset (TarWriter),
// laid out as img2dataset writes them (jpg, txt, json per key, a _stats.json and a
// parquet beside them), and Python reads the shards ShardWriter writes.
func TestStreamPythonWebdataset(t *testing.T) {
	py := testutil.PythonTorch(t, "webdataset")
	dir := t.TempDir()
	pyDir := filepath.Join(dir, "py")
	os.MkdirAll(pyDir, 0o755)
	for i := 0; i < 6; i++ {
		os.WriteFile(filepath.Join(pyDir, fmt.Sprintf("img%d.jpg", i)), solidJPEG(t, i, 16, 16), 0o644)
	}
	script := `
import sys, os, json, webdataset as wds
d = sys.argv[1]
for s in range(2):
    with wds.TarWriter(os.path.join(d, "%05d.tar" % s)) as w:
        for j in range(3):
            i = 3 * s + j
            w.write({"__key__": "%09d" % i, "jpg": open(os.path.join(d, "img%d.jpg" % i), "rb").read(),
                     "txt": "caption %d" % i, "json": {"caption": "caption %d" % i, "key": "%09d" % i, "status": "success"}})
    json.dump({"successes": 3}, open(os.path.join(d, "%05d_stats.json" % s), "w"))
    open(os.path.join(d, "%05d.parquet" % s), "wb").write(b"PAR1")
`
	cmd := exec.Command(py, "-c", script, pyDir)
	cmd.Dir = os.TempDir()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	sh, err := OpenShards(filepath.Join(pyDir, "{00000..00001}.tar"), ShardOptions{NumSamples: 6})
	if err != nil {
		t.Fatal(err)
	}
	o := streamOpts()
	o.Shuffle, o.BatchSize, o.Uint8 = false, 3, false
	l, err := NewStreamLoader(sh, o)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.StartAt(Position{}); err != nil {
		t.Fatal(err)
	}
	for k := 0; k < 2; k++ {
		b, err := l.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for j := 0; j < 3; j++ {
			i := 3*k + j
			if b.Captions[j] != fmt.Sprintf("caption %d", i) || b.Keys[j] != fmt.Sprintf("%05d.tar:%09d", k, i) {
				t.Errorf("sample %d: %s %q", i, b.Keys[j], b.Captions[j])
			}
			img, err := DecodeImage(solidJPEG(t, i, 16, 16), "x", 0)
			if err != nil {
				t.Fatal(err)
			}
			want := Preprocess(img, 8)
			if !slices.Equal(b.Pixels[j*192:(j+1)*192], want) {
				t.Errorf("sample %d: pixels differ from decoding its JPEG", i)
			}
		}
	}

	// Python's webdataset reads ShardWriter's shards: keys, captions, json fields and
	// the PNG bytes.
	ours := filepath.Join(dir, "ours")
	writeTestShards(t, ours, 2, 3)
	script = `
import sys, json, hashlib, webdataset as wds
ds = wds.WebDataset(sys.argv[1], shardshuffle=False)
out = [[s["__key__"], (s.get("txt") or b"").decode(), json.loads(s["json"]).get("caption"), hashlib.sha256(s["png"]).hexdigest()] for s in ds]
print(json.dumps(out))
`
	cmd = exec.Command(py, "-c", script, filepath.Join(ours, "part-{000000..000001}.tar"))
	cmd.Dir = os.TempDir()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v", err)
	}
	var rows [][]string
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(rows) != 6 {
		t.Fatalf("python read %d samples, want 6", len(rows))
	}
	for i, r := range rows {
		c := fmt.Sprintf("caption %d", i)
		txt, jc := r[1], r[2]
		if r[0] != fmt.Sprintf("s%04d", i) || (i%2 == 0 && txt != c) || (i%2 == 1 && jc != c) {
			t.Errorf("python sample %d: %v", i, r)
		}
		if r[3] != sha256Hex(solidPNG(t, i, 12, 10)) {
			t.Errorf("python sample %d: png bytes differ", i)
		}
	}
}

// TestShardItems lists shards as items for evaluation: the usable samples in order,
// the bad ones counted, and a Loader over them serves each member's image.
func TestShardItems(t *testing.T) {
	dir := t.TempDir()
	corruptShards(t, dir)
	sh, err := OpenShards(dir, ShardOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var rep Report
	items, err := ShardItems(sh, Val, &rep)
	if err != nil {
		t.Fatal(err)
	}
	// s0000's image is truncated: listed (its header is fine), unreadable when loaded.
	var names []string
	for _, it := range items {
		names = append(names, it.Name[strings.IndexByte(it.Name, ':')+1:])
	}
	want := []string{"s0000", "s0001", "s0003", "s0005", "s0006", "s0008", "s0010", "s0011", "s0012", "s0013", "s0014"}
	if !slices.Equal(names, want) {
		t.Fatalf("items %v, want %v", names, want)
	}
	if rep.SkippedFor(NoCaptions) != 2 || rep.SkippedFor(NonUTF8Caption) != 1 || rep.SkippedFor(MissingImage) != 1 || rep.SkippedFor(CorruptShard) != 1 {
		t.Errorf("report: %s", rep.Summary())
	}
	l := NewLoader(items, LoaderOptions{Size: 8, BatchSize: 20, Workers: 2, Uint8: true, FirstCaption: true, Report: &rep})
	defer l.Close()
	if err := l.Start(0, 0); err != nil {
		t.Fatal(err)
	}
	b, err := l.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if b.Len() != len(items)-1 || rep.SkippedFor(UnreadableImage) != 1 {
		t.Fatalf("%d images loaded of %d; %s", b.Len(), len(items), rep.Summary())
	}
	for j, idx := range b.Items {
		var i int
		fmt.Sscanf(items[idx].Name[strings.IndexByte(items[idx].Name, ':')+2:], "%d", &i)
		if c := sampleColour(i); b.Captions[j] != fmt.Sprintf("caption %d", i) || b.PixelsU8[j*192] != c[0] || b.PixelsU8[j*192+1] != c[1] {
			t.Errorf("%s: caption %q, pixel %v", items[idx].Name, b.Captions[j], b.PixelsU8[j*192:j*192+3])
		}
	}
}

// TestStreamDrawsCaptions: a sample whose json lists several captions (as goclip shard
// writes them) gets one of them per epoch, drawn from the sample's RNG; FirstCaption
// keeps the first.
func TestStreamDrawsCaptions(t *testing.T) {
	dir := t.TempDir()
	w, _ := NewShardWriter(dir, "c", 4)
	for i := 0; i < 4; i++ {
		caps := []string{fmt.Sprintf("caption %d", i), fmt.Sprintf("caption %d again", i), fmt.Sprintf("caption %d once more", i)}
		meta, _ := json.Marshal(map[string]any{"caption": caps[0], "captions": caps})
		if err := w.Add(fmt.Sprintf("s%04d", i), map[string][]byte{"png": solidPNG(t, i, 8, 8), "txt": []byte(caps[0]), "json": meta}); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	sh, _ := OpenShards(dir, ShardOptions{})
	seen := map[string]bool{}
	for _, first := range []bool{false, true} {
		o := streamOpts()
		o.FirstCaption = first
		l, err := NewStreamLoader(sh, o)
		if err != nil {
			t.Fatal(err)
		}
		for epoch := 0; epoch < 6; epoch++ {
			epochKeys(t, l, Position{Epoch: epoch}) // checks each caption names its image
			l.StartAt(Position{Epoch: epoch})
			b, _ := l.Next(context.Background())
			for j, c := range b.Captions {
				if first && c != "caption "+b.Keys[j][len(b.Keys[j])-1:] {
					t.Errorf("FirstCaption: %q for %s", c, b.Keys[j])
				}
				seen[c] = true
			}
		}
		l.Close()
	}
	if len(seen) < 8 {
		t.Errorf("%d distinct captions over 6 epochs of 4 samples with 3 captions each: %v", len(seen), seen)
	}
}

// TestWriteShardsBadInput checks that a data set WriteShards cannot write (none, or an
// image without a caption) is an error naming it, before any shard is written.
func TestWriteShardsBadInput(t *testing.T) {
	out := t.TempDir()
	if _, err := WriteShards(nil, out, ConvertOptions{}); err == nil || !strings.Contains(err.Error(), "no data set") {
		t.Errorf("WriteShards(nil): %v", err)
	}
	img := filepath.Join(t.TempDir(), "b.png")
	if err := os.WriteFile(img, solidPNG(t, 1, 8, 8), 0o644); err != nil {
		t.Fatal(err)
	}
	ds := &Dataset{Items: []Item{
		{Image: img, Name: "a.png", Captions: []string{"a red square"}, Split: Train},
		{Image: img, Name: "b.png", Split: Train},
	}}
	_, err := WriteShards(ds, out, ConvertOptions{})
	if err == nil || !strings.Contains(err.Error(), "b.png") || !strings.Contains(err.Error(), "caption") {
		t.Errorf("WriteShards with an uncaptioned image: %v, want an error naming b.png", err)
	}
	if entries, _ := os.ReadDir(out); len(entries) != 0 {
		t.Errorf("WriteShards wrote %d entries before failing", len(entries))
	}
}
