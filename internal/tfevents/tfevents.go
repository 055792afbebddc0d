// Package tfevents writes (and reads back) TensorBoard event files of scalar summaries.
//
// An event file ("events.out.tfevents.<unix time>.<host>.<pid>.<n>") is a sequence of
// TFRecords: a little-endian uint64 length, the masked CRC-32C of those 8 bytes as a
// little-endian uint32, the data, and the masked CRC-32C of the data (masked: the CRC
// rotated right by 15 bits plus 0xa282ead8). Each record's data is a serialised
// tensorflow.Event protobuf: wall_time (field 1, double, seconds), step (2, int64), and
// either file_version (3, string; the file's first event, "brain.Event:2") or a summary
// (5, Summary: repeated Value value = 1; Value: string tag = 1, float simple_value =
// 2). The protobuf is written field by field with protowire; no generated code.
//
// It is a leaf: it imports nothing of goclip but internal/atomicfile.
package tfevents

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"goclip/internal/atomicfile"
)

// FileVersion is the file_version of an event file's first event.
const FileVersion = "brain.Event:2"

// FilePrefix starts the name of every event file; TensorBoard reads the files of a
// folder whose names contain "tfevents".
const FilePrefix = "events.out.tfevents."

// Scalar is one simple_value of a summary.
type Scalar struct {
	Tag   string
	Value float64 // written as a float32, as the format holds it
}

// Event is a decoded event: a file_version or a summary of scalars.
type Event struct {
	WallTime    float64 // seconds since the Unix epoch
	Step        int64
	FileVersion string
	Scalars     []Scalar
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// maskedCRC is TFRecord's masked CRC-32C of b.
func maskedCRC(b []byte) uint32 {
	c := crc32.Checksum(b, castagnoli)
	return ((c >> 15) | (c << 17)) + 0xa282ead8
}

// appendRecord appends data framed as a TFRecord to buf.
func appendRecord(buf, data []byte) []byte {
	var head [8]byte
	binary.LittleEndian.PutUint64(head[:], uint64(len(data)))
	buf = append(buf, head[:]...)
	buf = binary.LittleEndian.AppendUint32(buf, maskedCRC(head[:]))
	buf = append(buf, data...)
	return binary.LittleEndian.AppendUint32(buf, maskedCRC(data))
}

// WallTime is t as the format's wall_time: seconds since the Unix epoch.
func WallTime(t time.Time) float64 { return float64(t.Unix()) + float64(t.Nanosecond())/1e9 }

// encodeEvent serialises e as a tensorflow.Event.
func encodeEvent(e Event) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, math.Float64bits(e.WallTime))
	if e.Step != 0 {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(e.Step))
	}
	if e.FileVersion != "" {
		b = protowire.AppendTag(b, 3, protowire.BytesType)
		return protowire.AppendString(b, e.FileVersion)
	}
	var summary []byte
	for _, s := range e.Scalars {
		var v []byte
		v = protowire.AppendTag(v, 1, protowire.BytesType)
		v = protowire.AppendString(v, s.Tag)
		v = protowire.AppendTag(v, 2, protowire.Fixed32Type)
		v = protowire.AppendFixed32(v, math.Float32bits(float32(s.Value)))
		summary = protowire.AppendTag(summary, 1, protowire.BytesType)
		summary = protowire.AppendBytes(summary, v)
	}
	b = protowire.AppendTag(b, 5, protowire.BytesType)
	return protowire.AppendBytes(b, summary)
}

// Writer appends summaries to one event file.
type Writer struct {
	Path string
}

// Create writes a new event file in dir (created when absent), atomically, holding the
// file_version event (at wall time now) and then the given events, and returns its
// writer. Older event files in dir are removed once the new one is in place, so that
// dir holds exactly these events (a resumed run rewrites its history this way).
func Create(dir string, now time.Time, events []Event) (*Writer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	name := fmt.Sprintf("%s%d.%s.%d.0", FilePrefix, now.Unix(), host, os.Getpid())
	for n := 1; ; n++ { // a second Create in the same second and process gets a new name
		if _, err := os.Stat(filepath.Join(dir, name)); errors.Is(err, os.ErrNotExist) {
			break
		}
		name = fmt.Sprintf("%s%d.%s.%d.%d", FilePrefix, now.Unix(), host, os.Getpid(), n)
	}
	buf := appendRecord(nil, encodeEvent(Event{WallTime: WallTime(now), FileVersion: FileVersion}))
	for _, e := range events {
		buf = appendRecord(buf, encodeEvent(e))
	}
	path := filepath.Join(dir, name)
	if err := atomicfile.WriteBytes(path, buf); err != nil {
		return nil, err
	}
	old, err := Files(dir)
	if err != nil {
		return nil, err
	}
	for _, p := range old {
		if p != path {
			if err := os.Remove(p); err != nil {
				return nil, err
			}
		}
	}
	return &Writer{Path: path}, nil
}

// Add appends the summary event e (its FileVersion is ignored) in one write.
func (w *Writer) Add(e Event) error {
	e.FileVersion = ""
	f, err := os.OpenFile(w.Path, os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(appendRecord(nil, encodeEvent(e))); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Files lists the event files of dir (by name, which is by creation time).
func Files(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), FilePrefix) {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out, nil
}

// ReadFile decodes the events of an event file, checking every record's CRCs. Errors
// name the file and the record's offset.
func ReadFile(path string) ([]Event, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []Event
	for off := 0; off < len(data); {
		bad := func(what string) error { return fmt.Errorf("%s: record at byte %d: %s", path, off, what) }
		if len(data)-off < 12 {
			return nil, bad("truncated header")
		}
		head := data[off : off+8]
		if binary.LittleEndian.Uint32(data[off+8:]) != maskedCRC(head) {
			return nil, bad("length CRC mismatch")
		}
		n := binary.LittleEndian.Uint64(head)
		if n > uint64(len(data)-off-16) {
			return nil, bad(fmt.Sprintf("length %d runs past the end of the file", n))
		}
		body := data[off+12 : off+12+int(n)]
		if binary.LittleEndian.Uint32(data[off+12+int(n):]) != maskedCRC(body) {
			return nil, bad("data CRC mismatch")
		}
		e, err := decodeEvent(body)
		if err != nil {
			return nil, bad(err.Error())
		}
		out = append(out, e)
		off += 16 + int(n)
	}
	return out, nil
}

// decodeEvent parses the fields of a tensorflow.Event this package writes; other
// fields are skipped.
func decodeEvent(b []byte) (Event, error) {
	var e Event
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == 1 && typ == protowire.Fixed64Type:
			e.WallTime = math.Float64frombits(x)
		case num == 2 && typ == protowire.VarintType:
			e.Step = int64(x)
		case num == 3 && typ == protowire.BytesType:
			e.FileVersion = string(v)
		case num == 5 && typ == protowire.BytesType:
			return eachField(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				if num != 1 || typ != protowire.BytesType {
					return nil
				}
				var s Scalar
				err := eachField(v, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
					switch {
					case num == 1 && typ == protowire.BytesType:
						s.Tag = string(v)
					case num == 2 && typ == protowire.Fixed32Type:
						s.Value = float64(math.Float32frombits(uint32(x)))
					}
					return nil
				})
				e.Scalars = append(e.Scalars, s)
				return err
			})
		}
		return nil
	})
	return e, err
}

// eachField calls f with each field of the message b: its bytes for length-delimited
// fields, its value for the others.
func eachField(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var y uint32
			y, n = protowire.ConsumeFixed32(b)
			x = uint64(y)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := f(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}
