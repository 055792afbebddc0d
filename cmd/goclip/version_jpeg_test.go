package main

import (
	"encoding/json"
	"strings"
	"testing"

	"goclip/internal/jpegturbo"
)

// TestVersionJPEGDecoder: goclip version names the JPEG decoder this test binary was
// built with (libjpeg-turbo and its version with -tags jpegturbo, Go's image/jpeg
// without), in text and JSON.
func TestVersionJPEGDecoder(t *testing.T) {
	want := "JPEG decoder: Go image/jpeg (built without -tags jpegturbo"
	if jpegturbo.Available {
		want = "JPEG decoder: libjpeg-turbo " + jpegturbo.Version + ","
	}
	if out := mustGoclip(t, "version"); !strings.Contains(out, want) {
		t.Errorf("version output lacks %q:\n%s", want, out)
	}
	var v versionInfo
	if err := json.Unmarshal([]byte(mustGoclip(t, "version", "--json")), &v); err != nil {
		t.Fatal(err)
	}
	if got := "JPEG decoder: " + v.JPEGDecoder; !strings.HasPrefix(got, want) {
		t.Errorf("version --json jpeg_decoder %q, want it to start %q", v.JPEGDecoder, strings.TrimPrefix(want, "JPEG decoder: "))
	}
}
