package train

import (
	"strings"
	"testing"

	"goclip/torch"
)

// Retrieval reports a caption-owner list that does not fit the embeddings, and a
// tensor failure (embeddings of different widths), as errors, without a panic or a
// leaked tensor.
func TestRetrievalErrors(t *testing.T) {
	base := torch.Live()
	func() {
		s := torch.NewScope()
		defer s.Close()
		img := torch.FromFloat32([]float32{1, 0, 0, 1}, 2, 2)       // [2, 2]
		txt := torch.FromFloat32([]float32{1, 0, 0, 1, 1, 1}, 3, 2) // [3, 2]
		for _, c := range []struct {
			owner []int
			want  string
		}{
			{[]int{0, 1}, "2 caption owners for 3 captions"},
			{[]int{0, 1, 2}, "caption 2 belongs to image 2 of 2"},
			{[]int{0, 1, -1}, "caption 2 belongs to image -1 of 2"},
		} {
			if _, _, err := Retrieval(img, txt, c.owner); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("owners %v: error %v, want %q", c.owner, err, c.want)
			}
		}
		wide := torch.FromFloat32([]float32{1, 0, 0, 0, 1, 0, 1, 1, 0}, 3, 3) // [3, 3]
		if _, _, err := Retrieval(img, wide, []int{0, 1, 1}); err == nil || !strings.Contains(err.Error(), "retrieval") {
			t.Errorf("embeddings of widths 2 and 3: error %v", err)
		}
		if _, _, err := Retrieval(img, txt, []int{0, 1, 1}); err != nil {
			t.Errorf("valid input: %v", err)
		}
	}()
	if live := torch.Live(); live != base {
		t.Errorf("torch.Live() %d after, %d before", live, base)
	}
}
