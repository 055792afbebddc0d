package train

// Checkpoint history: with SaveEvery N, every checkpoint written at a multiple of N is
// also kept as RUN/checkpoints/step-<step>.pt (a hard link to that last.pt, which the
// next write replaces by a rename and so leaves intact; a copy where the file system
// has no hard links), the newest Keep of them (0: all). ResolveCheckpoint names the
// checkpoint a resume continues from.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"goclip/internal/atomicfile"
	"goclip/internal/rundir"
)

// StepCheckpoint is the file name of the checkpoint kept at step.
func StepCheckpoint(step int) string { return rundir.StepFile(step) }

// StepCheckpoints lists the step checkpoints in the checkpoints folder dir, by step.
func StepCheckpoints(dir string) (steps []int, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	for _, e := range entries {
		if n, ok := rundir.StepOf(e.Name()); ok && e.Type().IsRegular() {
			steps = append(steps, n)
		}
	}
	sort.Ints(steps)
	return steps, nil
}

// ResolveCheckpoint is the checkpoint of run that spec names: "" or "latest" is
// checkpoints/last.pt (the newest write), "best" checkpoints/best.pt, "step-N"
// checkpoints/step-N.pt, anything else a path. It must be a file; errors name the flag
// --resume-from.
func ResolveCheckpoint(run, spec string) (string, error) {
	rd := RunDir(run)
	dir := rd.Checkpoints()
	var path string
	switch {
	case spec == "" || spec == "latest":
		path = rd.Last()
	case spec == "best":
		path = rd.Best()
	default:
		if step, ok := rundir.StepOf(spec + ".pt"); ok && !strings.ContainsRune(spec, os.PathSeparator) {
			path = rd.Step(step)
		} else {
			path = spec
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			steps, _ := StepCheckpoints(dir)
			have := "no step checkpoints"
			if len(steps) > 0 {
				names := make([]string, len(steps))
				for i, s := range steps {
					names[i] = strings.TrimSuffix(StepCheckpoint(s), ".pt")
				}
				have = "step checkpoints " + strings.Join(names, ", ")
			}
			return "", fmt.Errorf("--resume-from %s: %s does not exist (want latest, best, step-N or a checkpoint file; %s holds %s)", spec, path, dir, have)
		}
		return "", fmt.Errorf("--resume-from %s: %w", spec, err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("--resume-from %s: %s is not a file", spec, path)
	}
	return path, nil
}

// keepStepCheckpoint keeps last (just written at step) as dir/step-<step>.pt,
// atomically, and then removes the oldest step checkpoints beyond the newest keep (0:
// none removed).
func keepStepCheckpoint(dir, last string, step, keep int) error {
	name := StepCheckpoint(step)
	dst := filepath.Join(dir, name)
	tmp := filepath.Join(dir, strings.Replace(atomicfile.TempPattern(name), "*", "link", 1))
	os.Remove(tmp)
	if err := os.Link(last, tmp); err == nil {
		if err := os.Rename(tmp, dst); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("checkpoint %s: %w", dst, err)
		}
	} else if err := copyFile(dst, last); err != nil {
		return fmt.Errorf("checkpoint %s: %w", dst, err)
	}
	if keep <= 0 {
		return nil
	}
	steps, err := StepCheckpoints(dir)
	if err != nil {
		return err
	}
	for len(steps) > keep {
		if err := os.Remove(filepath.Join(dir, StepCheckpoint(steps[0]))); err != nil {
			return fmt.Errorf("--keep %d: %w", keep, err)
		}
		steps = steps[1:]
	}
	return nil
}

// dropStepCheckpointsAfter removes the step checkpoints of dir after step (those of a
// history that a resume from an earlier checkpoint abandons, as metrics.jsonl drops
// its rows) and returns their names.
func dropStepCheckpointsAfter(dir string, step int) ([]string, error) {
	steps, err := StepCheckpoints(dir)
	if err != nil {
		return nil, err
	}
	var gone []string
	for _, s := range steps {
		if s > step {
			if err := os.Remove(filepath.Join(dir, StepCheckpoint(s))); err != nil {
				return gone, err
			}
			gone = append(gone, StepCheckpoint(s))
		}
	}
	return gone, nil
}

// copyFile copies src to dst atomically.
func copyFile(dst, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	return atomicfile.WriteFile(dst, func(w io.Writer) error {
		_, err := io.Copy(w, f)
		return err
	})
}
