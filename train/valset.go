package train

import (
	"fmt"
	"os"
	"strings"

	"goclip/dataset"
)

// ValSetTolerance is the fraction of a run's validation images that may become
// unreadable during the run (deleted, truncated) before it stops: beyond it the
// validation losses, and best.pt chosen by them, no longer compare one set of images.
const ValSetTolerance = 0.05

// valSet is a run's validation set, fixed when the run starts: images missing then are
// left out (and reported once), images that vanish later are reported once, by name,
// and left out of later evaluations, until more than ValSetTolerance of the set changed.
type valSet struct {
	items  []dataset.Item
	gone   map[string]bool // Image paths of the items found missing during the run
	report *dataset.Report
}

// fixValSet stats every validation image and keeps those present.
func fixValSet(items []dataset.Item, rep *dataset.Report) *valSet {
	v := &valSet{gone: map[string]bool{}, report: rep}
	for _, it := range items {
		if _, err := os.Stat(it.Image); err != nil {
			if rep != nil {
				rep.AddSkippedImage(dataset.MissingImage, it.Name)
			}
			continue
		}
		v.items = append(v.items, it)
	}
	return v
}

// limit is the number of images that may change.
func (v *valSet) limit() int { return int(ValSetTolerance * float64(len(v.items))) }

// current is the set to evaluate now: the fixed set less the images that vanished,
// each newly vanished one recorded in the report. It fails when too many vanished.
func (v *valSet) current() ([]dataset.Item, error) {
	var out []dataset.Item
	var fresh []string
	for _, it := range v.items {
		if v.gone[it.Image] {
			continue
		}
		if _, err := os.Stat(it.Image); err != nil {
			v.gone[it.Image] = true
			fresh = append(fresh, it.Name)
			if v.report != nil {
				v.report.AddSkippedImage(dataset.MissingImage, it.Name)
			}
			continue
		}
		out = append(out, it)
	}
	if len(v.gone) > v.limit() {
		return nil, v.changedError(len(v.gone), fresh)
	}
	return out, nil
}

// check is called after an evaluation of evaluated items that kept images of them:
// images unreadable in this evaluation count as changed too.
func (v *valSet) check(evaluated []dataset.Item, kept int, evRep *dataset.Report) error {
	if n := len(v.gone) + len(evaluated) - kept; n > v.limit() {
		return v.changedError(n, nil, evRep.Summary())
	}
	return nil
}

func (v *valSet) changedError(n int, names []string, detail ...string) error {
	msg := fmt.Sprintf("the validation set changed during the run: %d of its %d images can no longer be read (more than %.0f%%), so validation losses and best.pt would no longer compare the same images; restore them and continue with --resume",
		n, len(v.items), 100*ValSetTolerance)
	if len(names) > 0 {
		msg += " (vanished: " + strings.Join(names[:min(len(names), dataset.MaxExamples)], ", ") + ")"
	}
	if len(detail) > 0 {
		msg += " (" + strings.Join(detail, "; ") + ")"
	}
	return fmt.Errorf("%s", msg)
}
