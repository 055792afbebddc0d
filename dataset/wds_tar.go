package dataset

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// imageExts are the member extensions read as a sample's image, in order of preference.
var imageExts = []string{"jpg", "jpeg", "png", "webp", "gif", "bmp"}

// member locates one tar member's data in its shard.
type member struct {
	off, size int64
	name      string // "" when absent
}

// shardSample is one sample of a shard as its headers describe it; the data is read
// later (readMember), by the worker that decodes it.
type shardSample struct {
	shard           int // index into Shards.Paths
	key             string
	image, txt, jsn member
	imageExt        string
}

// splitMemberName splits a member name into webdataset's key and extension: the key is
// the name up to the first dot of its base name (its folder kept), the extension the
// rest, lower-cased. ok is false for names without both.
func splitMemberName(name string) (key, ext string, ok bool) {
	dir, base := path.Split(name)
	i := strings.IndexByte(base, '.')
	if i <= 0 || i == len(base)-1 {
		return "", "", false
	}
	return dir + base[:i], strings.ToLower(base[i+1:]), true
}

// tarScanner reads a shard's headers, grouping consecutive members of one key into
// samples. It never reads member data: archive/tar seeks over it (checking that the
// data is there).
type tarScanner struct {
	f       *os.File
	tr      *tar.Reader
	shard   int
	pending *tar.Header
	pendOff int64
	err     error // the shard's error, once met
	done    bool
}

func openScanner(p string, shard int) (*tarScanner, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	return &tarScanner{f: f, tr: tar.NewReader(f), shard: shard}, nil
}

func (s *tarScanner) close() { s.f.Close() }

// header returns the next regular member's header and its data offset.
func (s *tarScanner) header() (*tar.Header, int64, bool) {
	if s.pending != nil {
		h, off := s.pending, s.pendOff
		s.pending = nil
		return h, off, true
	}
	for !s.done {
		h, err := s.tr.Next()
		if err != nil {
			s.done = true
			if err != io.EOF {
				s.err = err
			}
			return nil, 0, false
		}
		if h.Typeflag != tar.TypeReg && h.Typeflag != tar.TypeRegA {
			continue
		}
		off, err := s.f.Seek(0, io.SeekCurrent)
		if err != nil {
			s.done, s.err = true, err
			return nil, 0, false
		}
		return h, off, true
	}
	return nil, 0, false
}

// next returns the shard's next sample; false at its end (s.err tells whether the
// shard was corrupt).
func (s *tarScanner) next() (shardSample, bool) {
	var cur shardSample
	have := false
	for {
		h, off, ok := s.header()
		if !ok {
			return cur, have
		}
		key, ext, ok := splitMemberName(h.Name)
		if !ok {
			continue
		}
		if have && key != cur.key {
			s.pending, s.pendOff = h, off
			return cur, true
		}
		if !have {
			cur = shardSample{shard: s.shard, key: key}
			have = true
		}
		m := member{off: off, size: h.Size, name: h.Name}
		switch {
		case ext == "txt" && cur.txt.name == "":
			cur.txt = m
		case ext == "json" && cur.jsn.name == "":
			cur.jsn = m
		default:
			if r := extRank(ext); r < len(imageExts) && (cur.image.name == "" || r < extRank(cur.imageExt)) {
				cur.image, cur.imageExt = m, ext
			}
		}
	}
}

func extRank(ext string) int {
	ext = strings.ToLower(ext)
	for i, e := range imageExts {
		if e == ext {
			return i
		}
	}
	return len(imageExts)
}

// maxMember is the largest member readMember reads.
const maxMember = 1 << 30

// readMember reads m's data from the shard file f.
func readMember(f *os.File, m member) ([]byte, error) {
	if m.size > maxMember {
		return nil, fmt.Errorf("%s: %d bytes, over the %d MiB limit", m.name, m.size, maxMember>>20)
	}
	buf := make([]byte, m.size)
	n, err := f.ReadAt(buf, m.off)
	if n == len(buf) {
		return buf, nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return nil, fmt.Errorf("%s: truncated (%d of %d bytes): %w", m.name, n, m.size, err)
}

// errNoCaption is the error of a sample without a usable caption member.
var errNoCaption = errors.New("no caption (no txt member, and no json member with the caption field)")

// sampleCaption reads a sample's caption: its txt member, else the captionKey field of
// its json member. The reason classifies a failure for the Report.
func sampleCaption(f *os.File, s shardSample, captionKey string) (string, Reason, error) {
	if s.txt.name != "" {
		b, err := readMember(f, s.txt)
		if err != nil {
			return "", NoCaptions, err
		}
		if !utf8.Valid(b) {
			return "", NonUTF8Caption, fmt.Errorf("%s: caption is not valid UTF-8", s.txt.name)
		}
		c, why := checkCaption(string(b))
		if why != "" {
			return "", why, fmt.Errorf("%s: %s", s.txt.name, why)
		}
		return c, "", nil
	}
	if s.jsn.name == "" {
		return "", NoCaptions, errNoCaption
	}
	b, err := readMember(f, s.jsn)
	if err != nil {
		return "", NoCaptions, err
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		return "", NoCaptions, fmt.Errorf("%s: %w", s.jsn.name, err)
	}
	raw, ok := obj[captionKey]
	if !ok {
		return "", NoCaptions, fmt.Errorf("%s: no %q field and no txt member", s.jsn.name, captionKey)
	}
	if !utf8.Valid(raw) {
		return "", NonUTF8Caption, fmt.Errorf("%s: caption is not valid UTF-8", s.jsn.name)
	}
	var c string
	if err := json.Unmarshal(raw, &c); err != nil {
		return "", NoCaptions, fmt.Errorf("%s: field %q is not a string", s.jsn.name, captionKey)
	}
	c, why := checkCaption(c)
	if why != "" {
		return "", why, fmt.Errorf("%s: %s", s.jsn.name, why)
	}
	return c, "", nil
}

// readItemImage reads an item's image: its file, or its bytes in a shard.
func readItemImage(it *Item, maxPixels int) (RGB, error) {
	if it.Size <= 0 {
		return ReadImage(it.Image, maxPixels)
	}
	f, err := os.Open(it.Image)
	if err != nil {
		return RGB{}, &ImageError{it.Image, err}
	}
	defer f.Close()
	data, err := readMember(f, member{off: it.Offset, size: it.Size, name: it.Name})
	if err != nil {
		return RGB{}, &ImageError{it.Image, err}
	}
	return DecodeImage(data, it.Image+":"+it.Name, maxPixels)
}

// ShardItems lists the samples of sh in order as items of split s (evaluation, which
// needs the whole set), reading the shards' headers and captions (all of an image's
// captions when its json member lists them, see allCaptions); each item's image
// is its member in the shard (Item.Offset, Item.Size), its Name "SHARD.tar:KEY".
// Samples without a caption or an image and corrupt shards are counted in rep.
func ShardItems(sh *Shards, s Split, rep *Report) ([]Item, error) {
	var items []Item
	for i, p := range sh.Paths {
		sc, err := openScanner(p, i)
		if err != nil {
			rep.AddSkipped(CorruptShard, Place{Name: fmt.Sprintf("%s (%v)", p, err)})
			continue
		}
		for {
			smp, ok := sc.next()
			if !ok {
				break
			}
			label := filepath.Base(p) + ":" + smp.key
			c, why, err := sampleCaption(sc.f, smp, sh.CaptionKey)
			if err != nil {
				rep.AddSkipped(why, Place{Name: label})
				continue
			}
			if smp.image.name == "" {
				rep.AddSkipped(MissingImage, Place{Name: label})
				continue
			}
			if smp.image.size == 0 {
				rep.AddSkipped(UnreadableImage, Place{Name: label})
				continue
			}
			items = append(items, Item{Image: p, Name: label, Captions: allCaptions(sc.f, smp, c), Split: s, Offset: smp.image.off, Size: smp.image.size})
		}
		if sc.err != nil {
			rep.AddSkipped(CorruptShard, Place{Name: fmt.Sprintf("%s (%v)", p, sc.err)})
		}
		sc.close()
	}
	if len(items) == 0 {
		return nil, fmt.Errorf("shards %s ...: no usable sample (%s)", sh.Paths[0], rep.Summary())
	}
	return items, nil
}

// allCaptions is a sample's captions for evaluation: the "captions" list of its json
// member when it has one whose first entry is the caption (goclip shard writes every
// caption of an image there), else just the caption.
func allCaptions(f *os.File, s shardSample, caption string) []string {
	one := []string{caption}
	if s.jsn.name == "" {
		return one
	}
	b, err := readMember(f, s.jsn)
	if err != nil || !utf8.Valid(b) {
		return one
	}
	var obj struct {
		Captions []string `json:"captions"`
	}
	if json.Unmarshal(b, &obj) != nil || len(obj.Captions) == 0 {
		return one
	}
	var out []string
	for _, c := range obj.Captions {
		if c, why := checkCaption(c); why == "" {
			out = append(out, c)
		}
	}
	if len(out) == 0 || out[0] != caption {
		return one
	}
	return out
}
