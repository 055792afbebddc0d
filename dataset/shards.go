package dataset

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// FormatWebDataset is Dataset.Format for webdataset tar shards.
const FormatWebDataset = "webdataset"

// SizesFile is the file, next to the shards, that gives each shard's sample count as
// webdataset and open_clip write it: {"00000.tar": 10000, ...}.
const SizesFile = "sizes.json"

// DefaultCaptionKey is the json field a sample's caption is read from when it has no txt
// member (img2dataset writes "caption").
const DefaultCaptionKey = "caption"

// ShardOptions configure reading webdataset shards.
type ShardOptions struct {
	// CaptionKey is the field of a sample's json member holding its caption, used when
	// the sample has no txt member (default DefaultCaptionKey).
	CaptionKey string
	// ShuffleBuffer is the number of samples mixed within a rank while training (a
	// sample is drawn at random from the buffer, which the stream refills); 0 or 1:
	// none. The shard order is shuffled each epoch regardless.
	ShuffleBuffer int
	// NumSamples is the number of samples of an epoch (over all ranks); 0 takes the sum
	// of the shards' counts in SizesFile.
	NumSamples int
	// Resampled draws each rank's shards with replacement (open_clip's
	// --dataset-resampled): the stream never ends, and an epoch is NumSamples samples.
	Resampled bool
}

// Shards is a list of webdataset tar shards and how to read them.
type Shards struct {
	Paths []string
	Sizes []int // samples per shard, from SizesFile; nil when unknown
	ShardOptions
}

// Source kinds, as SourceKind tells them.
const (
	SourceFolder = "folder" // a data set folder (Open)
	SourceShards = "shards" // webdataset shards (OpenShards)
	SourceTable  = "table"  // a CSV, TSV or JSONL file named directly (OpenTable)
)

// SourceKind tells what a --data value names: a brace pattern or a .tar file, a folder
// of .tar files without a caption file, or a text file listing shards are shards; a
// .csv, .tsv or .jsonl file is a table; other folders are data set folders.
func SourceKind(spec string) string {
	if strings.Contains(spec, "::") || strings.ContainsAny(spec, "{") || strings.HasSuffix(strings.ToLower(spec), ".tar") {
		return SourceShards
	}
	st, err := os.Stat(spec)
	if err != nil {
		return SourceFolder // Open reports the error
	}
	if st.IsDir() {
		if _, err := detect(spec, ""); err == nil {
			return SourceFolder
		}
		if tars, _ := filepath.Glob(filepath.Join(spec, "*.tar")); len(tars) > 0 {
			return SourceShards
		}
		if len(ShardSplits(spec)) > 0 {
			return SourceShards
		}
		return SourceFolder
	}
	switch strings.ToLower(filepath.Ext(spec)) {
	case ".csv", ".tsv", ".jsonl":
		return SourceTable
	}
	return SourceShards // a list of shard paths
}

// OpenShards resolves spec to a list of shards: brace patterns as webdataset writes
// them ("data/{00000..00127}.tar", "{a,b}.tar"; several joined by "::"), a folder
// (its *.tar files in name order) or a text file listing shard paths, one a line
// (relative to the file's folder; blank lines and lines starting with # are ignored).
// Every shard must exist; none is read yet. Sizes are read from SizesFile in the
// folder of the first shard when it lists every shard.
func OpenShards(spec string, opts ShardOptions) (*Shards, error) {
	if opts.CaptionKey == "" {
		opts.CaptionKey = DefaultCaptionKey
	}
	if opts.NumSamples < 0 {
		return nil, fmt.Errorf("shards %s: a negative number of samples (%d)", spec, opts.NumSamples)
	}
	var paths []string
	for _, part := range strings.Split(spec, "::") {
		if part == "" {
			continue
		}
		p, err := shardPaths(part)
		if err != nil {
			return nil, err
		}
		paths = append(paths, p...)
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("shards %s: no shard", spec)
	}
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("shards %s: %w", spec, err)
		}
		if !st.Mode().IsRegular() {
			return nil, fmt.Errorf("shards %s: %s is not a file", spec, p)
		}
	}
	sh := &Shards{Paths: paths, ShardOptions: opts}
	sizes, err := readSizes(filepath.Join(filepath.Dir(paths[0]), SizesFile), paths)
	if err != nil {
		return nil, err
	}
	sh.Sizes = sizes
	return sh, nil
}

func shardPaths(spec string) ([]string, error) {
	if strings.Contains(spec, "{") {
		return ExpandBraces(spec)
	}
	st, err := os.Stat(spec)
	if err != nil {
		return nil, fmt.Errorf("shards: %w", err)
	}
	if st.IsDir() {
		tars, err := filepath.Glob(filepath.Join(spec, "*.tar"))
		if err != nil {
			return nil, err
		}
		if len(tars) == 0 {
			return nil, fmt.Errorf("shards: %s holds no .tar file", spec)
		}
		sort.Strings(tars)
		return tars, nil
	}
	if strings.HasSuffix(strings.ToLower(spec), ".tar") {
		return []string{spec}, nil
	}
	f, err := os.Open(spec)
	if err != nil {
		return nil, fmt.Errorf("shards: %w", err)
	}
	defer f.Close()
	var out []string
	dir := filepath.Dir(spec)
	err = eachLine(f, spec, func(line string, n int) error {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			return nil
		}
		if strings.Contains(line, "{") {
			p, err := ExpandBraces(line)
			if err != nil {
				return lineError(spec, n, "%v", err)
			}
			for i := range p {
				if !filepath.IsAbs(p[i]) {
					p[i] = filepath.Join(dir, p[i])
				}
			}
			out = append(out, p...)
			return nil
		}
		if !filepath.IsAbs(line) {
			line = filepath.Join(dir, line)
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("shards: %s lists no shard", spec)
	}
	return out, nil
}

// ExpandBraces expands a brace pattern as webdataset (Python's braceexpand) does:
// "{00000..00003}" is a zero-padded numeric range (the width of the first bound), and
// "{a,b}" alternatives; several braces multiply. An unbalanced brace is an error.
func ExpandBraces(s string) ([]string, error) {
	i := strings.IndexByte(s, '{')
	if i < 0 {
		if strings.IndexByte(s, '}') >= 0 {
			return nil, fmt.Errorf("brace pattern %q: unbalanced }", s)
		}
		return []string{s}, nil
	}
	j := strings.IndexByte(s[i:], '}')
	if j < 0 {
		return nil, fmt.Errorf("brace pattern %q: unbalanced {", s)
	}
	j += i
	body := s[i+1 : j]
	var alts []string
	if lo, hi, ok := strings.Cut(body, ".."); ok && !strings.Contains(body, ",") {
		a, err1 := strconv.Atoi(lo)
		b, err2 := strconv.Atoi(hi)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("brace pattern %q: range {%s} is not numeric", s, body)
		}
		if b-a > 10_000_000 || a-b > 10_000_000 {
			return nil, fmt.Errorf("brace pattern %q: range {%s} is too long", s, body)
		}
		width := 0
		if len(lo) > 1 && lo[0] == '0' {
			width = len(lo)
		}
		step := 1
		if b < a {
			step = -1
		}
		for k := a; ; k += step {
			alts = append(alts, fmt.Sprintf("%0*d", width, k))
			if k == b {
				break
			}
		}
	} else {
		alts = strings.Split(body, ",")
	}
	rest, err := ExpandBraces(s[j+1:])
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(alts)*len(rest))
	for _, a := range alts {
		for _, r := range rest {
			out = append(out, s[:i]+a+r)
		}
	}
	return out, nil
}

// readSizes reads a sizes.json giving every shard of paths its count; nil (no error)
// when the file is absent or does not list them all.
func readSizes(file string, paths []string) ([]int, error) {
	data, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var m map[string]int
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	out := make([]int, len(paths))
	for i, p := range paths {
		n, ok := m[filepath.Base(p)]
		if !ok || n < 0 {
			return nil, nil
		}
		out[i] = n
	}
	return out, nil
}

// EpochSamples is the number of samples of an epoch over all ranks: NumSamples, or
// the sum of Sizes.
func (s *Shards) EpochSamples() (int, error) {
	if s.NumSamples > 0 {
		return s.NumSamples, nil
	}
	if s.Sizes == nil {
		return 0, fmt.Errorf("shards %s...: the number of samples is unknown (no %s listing every shard): give --train-num-samples",
			s.Paths[0], SizesFile)
	}
	n := 0
	for _, k := range s.Sizes {
		n += k
	}
	return n, nil
}

// ShardSplits returns the subfolders of dir that hold the shards of a split, as
// goclip shard writes them (dir/train, dir/val, dir/test holding .tar files).
func ShardSplits(dir string) map[Split]string {
	out := map[Split]string{}
	for _, s := range []Split{Train, Val, Test} {
		sub := filepath.Join(dir, string(s))
		if tars, _ := filepath.Glob(filepath.Join(sub, "*.tar")); len(tars) > 0 {
			out[s] = sub
		}
	}
	return out
}
