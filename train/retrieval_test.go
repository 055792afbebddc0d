package train

import (
	"math"
	"math/rand/v2"
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

// TestRetrievalHandChecked checks recalls and the pair loss on embeddings small enough
// to rank by hand.
func TestRetrievalHandChecked(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	// Three images on the axes of the plane (cosine 1 with themselves, 0 with the other
	// axis, -1 with the opposite direction).
	img := torch.FromFloat32([]float32{
		1, 0, // image 0
		0, 1, // image 1
		-1, 0, // image 2
	}, 3, 2)
	// Two captions per image. Caption 1 (of image 0) points at image 1; caption 3 (of
	// image 1) points at image 2; the rest point at their own image (scaled: cosine
	// ignores the norm).
	txt := torch.FromFloat32([]float32{
		2, 0.1, // c0 of image 0: nearest image 0
		0.1, 1, // c1 of image 0: nearest image 1
		0.2, 3, // c2 of image 1: nearest image 1
		-1, -0.1, // c3 of image 1: nearest image 2
		-1, 0.3, // c4 of image 2: nearest image 2
		-1, 0.2, // c5 of image 2: nearest image 2
	}, 6, 2)
	owner := []int{0, 0, 1, 1, 2, 2}
	i2t, t2i, err := Retrieval(img, txt, owner)
	if err != nil {
		t.Fatal(err)
	}
	// Image 0's nearest caption is c0 (its own): hit at rank 1. Image 1's nearest is c2
	// (its own). Image 2's nearest is c3 (cos .995, image 1's), then c5, c4: own caption
	// at rank 2. So R@1 = 2/3, R@5 = R@10 = 1.
	if math.Abs(i2t.R1-2.0/3) > 1e-9 || i2t.R5 != 1 || i2t.R10 != 1 {
		t.Errorf("image->text %+v, want R@1 2/3, R@5 1, R@10 1", i2t)
	}
	// Captions: c0->0 hit, c1->1 (own 0 at rank 2), c2->1 hit, c3->2 (own 1 at rank 2),
	// c4, c5 -> 2 hits: R@1 = 4/6; with 3 images, R@5 = R@10 = 1.
	if math.Abs(t2i.R1-4.0/6) > 1e-9 || t2i.R5 != 1 || t2i.R10 != 1 {
		t.Errorf("text->image %+v, want R@1 2/3, R@5 1, R@10 1", t2i)
	}

	// Pair loss over batches of 2 pairs (the second batch partial): images 0,1 with
	// their first captions c0, c2, then image 2 with c4 alone (CE of one logit: 0).
	pair := torch.FromFloat32([]float32{2, 0.1, 0.2, 3, -1, 0.3}, 3, 2)
	scale := math.Log(10)
	got := pairLoss(img, pair, torch.Scalar(float32(scale)), 2)
	cos := func(a, b [2]float64) float64 {
		return (a[0]*b[0] + a[1]*b[1]) / math.Hypot(a[0], a[1]) / math.Hypot(b[0], b[1])
	}
	I := [][2]float64{{1, 0}, {0, 1}}
	T := [][2]float64{{2, 0.1}, {0.2, 3}}
	var l [2][2]float64
	for i := 0; i < 2; i++ {
		for j := 0; j < 2; j++ {
			l[i][j] = 10 * cos(I[i], T[j])
		}
	}
	ce := func(x [2]float64, k int) float64 { return math.Log(math.Exp(x[0])+math.Exp(x[1])) - x[k] }
	rows := (ce(l[0], 0) + ce(l[1], 1)) / 2
	cols := (ce([2]float64{l[0][0], l[1][0]}, 0) + ce([2]float64{l[0][1], l[1][1]}, 1)) / 2
	want := ((rows+cols)/2*2 + 0*1) / 3
	if math.Abs(got-want) > 1e-5 {
		t.Errorf("pair loss %.7f, want %.7f", got, want)
	}
}

// TestRetrievalMatchesDefinition compares Retrieval with a direct implementation of the
// definition on random embeddings with 5 captions per image.
func TestRetrievalMatchesDefinition(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	const n, per, d = 37, 5, 8
	imgs := make([]float32, n*d)
	txts := make([]float32, n*per*d)
	var owner []int
	for i := range imgs {
		imgs[i] = float32(rng.NormFloat64())
	}
	for j := 0; j < n*per; j++ {
		owner = append(owner, j/per)
		for k := 0; k < d; k++ { // near its image, so that recalls are neither 0 nor 1
			txts[j*d+k] = imgs[(j/per)*d+k] + float32(1.5*rng.NormFloat64())
		}
	}
	i2t, t2i, err := Retrieval(torch.FromFloat32(imgs, n, d), torch.FromFloat32(txts, n*per, d), owner)
	if err != nil {
		t.Fatal(err)
	}

	cos := func(a, b []float32) float64 {
		var ab, aa, bb float64
		for k := range a {
			ab += float64(a[k]) * float64(b[k])
			aa += float64(a[k]) * float64(a[k])
			bb += float64(b[k]) * float64(b[k])
		}
		return ab / math.Sqrt(aa*bb)
	}
	// rankOf is the number of candidates strictly more similar than the best match.
	var wantI2T, wantT2I [3]float64
	for i := 0; i < n; i++ {
		best := math.Inf(-1)
		for j := 0; j < n*per; j++ {
			if owner[j] == i {
				best = math.Max(best, cos(imgs[i*d:(i+1)*d], txts[j*d:(j+1)*d]))
			}
		}
		better := 0
		for j := 0; j < n*per; j++ {
			if owner[j] != i && cos(imgs[i*d:(i+1)*d], txts[j*d:(j+1)*d]) > best {
				better++
			}
		}
		for r, k := range recallKs {
			if better < k {
				wantI2T[r] += 1.0 / n
			}
		}
	}
	for j := 0; j < n*per; j++ {
		own := cos(txts[j*d:(j+1)*d], imgs[owner[j]*d:(owner[j]+1)*d])
		better := 0
		for i := 0; i < n; i++ {
			if i != owner[j] && cos(txts[j*d:(j+1)*d], imgs[i*d:(i+1)*d]) > own {
				better++
			}
		}
		for r, k := range recallKs {
			if better < k {
				wantT2I[r] += 1.0 / float64(n*per)
			}
		}
	}
	got := [2][3]float64{{i2t.R1, i2t.R5, i2t.R10}, {t2i.R1, t2i.R5, t2i.R10}}
	want := [2][3]float64{wantI2T, wantT2I}
	t.Logf("image->text %+v, text->image %+v", i2t, t2i)
	for a := range got {
		for r := range got[a] {
			if math.Abs(got[a][r]-want[a][r]) > 1e-9 {
				t.Errorf("direction %d R@%d = %g, definition gives %g", a, recallKs[r], got[a][r], want[a][r])
			}
		}
	}
}
