package main

// launch starts this test binary in place of goclip: TestLaunchChild, given the
// command after "--", runs it through runApp as goclip would.

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// useTestBinaryForLaunch makes launch start this test binary, running TestLaunchChild.
func useTestBinaryForLaunch(t *testing.T) {
	t.Helper()
	prev := launchSelf
	launchSelf = func() (string, []string, error) {
		exe, err := os.Executable()
		return exe, []string{"-test.run=^TestLaunchChild$", "--"}, err
	}
	t.Cleanup(func() { launchSelf = prev })
	t.Setenv("GOCLIP_LAUNCH_CHILD", "1")
}

// TestLaunchChild is one process started by launch in the tests below.
func TestLaunchChild(t *testing.T) {
	if os.Getenv("GOCLIP_LAUNCH_CHILD") == "" {
		t.Skip("a process started by the launch tests")
	}
	args := flag.Args()
	if len(args) > 0 && args[0] == "die-on-rank-1" { // a test command: rank 1 fails
		fmt.Printf("rank %s of %s, port %s\n", os.Getenv("RANK"), os.Getenv("WORLD_SIZE"), os.Getenv("MASTER_PORT"))
		if os.Getenv("RANK") == "1" {
			time.Sleep(3 * time.Second) // the other ranks print first, even on a loaded machine
			fmt.Fprintln(os.Stderr, "dying")
			os.Exit(3)
		}
		time.Sleep(time.Minute) // stopped by launch
		os.Exit(0)
	}
	if len(args) > 0 && args[0] == "sleep" { // a test command: wait for a signal
		fmt.Printf("sleeping\n")
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	if err := runApp(newApp(), append([]string{"goclip"}, args...)); err != nil {
		fmt.Fprintln(os.Stderr, "goclip:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func TestLaunchVersion(t *testing.T) {
	useTestBinaryForLaunch(t)
	out, errOut, err := runGoclip(t, "launch", "--nproc", "2", "--", "version")
	if err != nil {
		t.Fatalf("launch: %v\n%s%s", err, out, errOut)
	}
	for r := 0; r < 2; r++ {
		want := fmt.Sprintf("[rank %d] goclip ", r)
		if !strings.Contains(out, want) {
			t.Errorf("no line starting %q in\n%s", want, out)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !strings.HasPrefix(line, "[rank 0] ") && !strings.HasPrefix(line, "[rank 1] ") {
			t.Errorf("line without a rank prefix: %q", line)
		}
	}
}

func TestLaunchFailureStopsAll(t *testing.T) {
	useTestBinaryForLaunch(t)
	start := time.Now()
	out, errOut, err := runGoclip(t, "launch", "--nproc", "3", "--grace", "2s", "--", "die-on-rank-1")
	took := time.Since(start)
	t.Logf("launch returned after %.2fs: %v", took.Seconds(), err)
	if err == nil || !strings.Contains(err.Error(), "rank 1 of 3 failed") {
		t.Fatalf("error %v does not name rank 1\n%s%s", err, out, errOut)
	}
	if !strings.Contains(errOut, "[rank 1] dying") {
		t.Errorf("rank 1's stderr not forwarded with its prefix:\n%s", errOut)
	}
	for r := 0; r < 3; r++ {
		if !strings.Contains(out, fmt.Sprintf("[rank %d] rank %d of 3, port ", r, r)) {
			t.Errorf("rank %d's environment or output missing:\n%s", r, out)
		}
	}
	if took > 20*time.Second {
		t.Errorf("launch took %v to stop the other ranks", took)
	}
}

func TestLaunchUsage(t *testing.T) {
	if _, _, err := runGoclip(t, "launch", "--nproc", "2"); err == nil {
		t.Error("launch without a command succeeded")
	}
	if _, _, err := runGoclip(t, "launch", "--nproc", "0", "--", "version"); err == nil {
		t.Error("launch --nproc 0 succeeded")
	}
}

// lockedBuffer is a bytes.Buffer safe to read while launch writes to it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestLaunchForwardsSignal: SIGTERM to launch reaches every rank, and launch ends.
func TestLaunchForwardsSignal(t *testing.T) {
	useTestBinaryForLaunch(t)
	var out, errOut lockedBuffer
	app := newApp()
	app.Writer, app.ErrWriter = &out, &errOut
	done := make(chan error, 1)
	go func() { done <- app.Run([]string{"goclip", "launch", "--nproc", "2", "--grace", "5s", "--", "sleep"}) }()
	deadline := time.Now().Add(30 * time.Second)
	for strings.Count(out.String(), "sleeping") < 2 { // both ranks started (signals are caught by then)
		if time.Now().After(deadline) {
			t.Fatalf("ranks did not start:\n%s%s", out.String(), errOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Logf("launch ended %.2fs after SIGTERM: %v", time.Since(start).Seconds(), err)
		if err == nil || !strings.Contains(err.Error(), "interrupted") {
			t.Fatalf("launch after SIGTERM: %v", err)
		}
		if time.Since(start) > 4*time.Second {
			t.Errorf("the ranks did not exit on the forwarded SIGTERM (took %v)", time.Since(start))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("launch did not end after SIGTERM")
	}
}
