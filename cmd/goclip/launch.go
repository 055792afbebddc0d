package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
)

// The flags of goclip launch.
var (
	nprocFlag      = &cli.IntFlag{Name: "nproc", Usage: "number of processes (ranks) to start", Required: true, EnvVars: []string{"GOCLIP_NPROC"}}
	masterPortFlag = &cli.IntFlag{Name: "master-port", Usage: "rendezvous port on 127.0.0.1 (default: a free one)", EnvVars: []string{"GOCLIP_MASTER_PORT"}}
	graceFlag      = &cli.DurationFlag{Name: "grace", Usage: "time the other processes get to exit after SIGTERM before SIGKILL", Value: 10 * time.Second, EnvVars: []string{"GOCLIP_LAUNCH_GRACE"}}
)

var launchCommand = &cli.Command{
	Name:      "launch",
	Usage:     "start N local goclip processes for distributed training, as torchrun does",
	ArgsUsage: "-- COMMAND [ARGS...]",
	Description: `Starts --nproc processes of this goclip binary, each running COMMAND ARGS with the
environment torchrun sets: RANK and LOCAL_RANK (0 to N-1), WORLD_SIZE and
LOCAL_WORLD_SIZE (N), MASTER_ADDR (127.0.0.1) and MASTER_PORT (a free port unless
--master-port is given). Rank 0 hosts the rendezvous; the commands that train
(train, finetune) read these variables and join one process group.

Every line the processes print is prefixed with "[rank R] ". SIGINT and SIGTERM are
passed on to all of them. When one exits with an error, the others are stopped
(SIGTERM, then SIGKILL after --grace) and launch fails naming that rank.

Across machines, or with one process per GPU, use torchrun itself: goclip reads the
same variables, so

   torchrun --no-python --nproc-per-node 8 bin/goclip train ...

is the torchrun equivalent of

   goclip launch --nproc 8 -- train ...

(add --nnodes, --node-rank and --rdzv-endpoint or --master-addr for several machines;
SLURM's srun works the same way when it exports these variables).

Examples:
   goclip launch --nproc 2 -- version
   goclip launch --nproc 2 -- train --config tiny --data data/synth --out runs/ddp --batch-size 32 --threads 1`,
	Flags:  []cli.Flag{nprocFlag, masterPortFlag, graceFlag},
	Action: runLaunch,
}

// launchSelf is the program launch starts and the arguments that come before COMMAND:
// this executable. Tests replace it to start their own binary.
var launchSelf = func() (string, []string, error) {
	exe, err := os.Executable()
	return exe, nil, err
}

// freeTCPPort asks the kernel for a port on 127.0.0.1 that nothing listens on.
func freeTCPPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// prefixLines copies r to w line by line with a prefix, each line written whole under mu.
func prefixLines(w io.Writer, mu *sync.Mutex, prefix string, r io.Reader) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			if line[len(line)-1] != '\n' {
				line = append(line, '\n')
			}
			mu.Lock()
			w.Write(append([]byte(prefix), line...))
			mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// rankExit is how one rank's process ended.
type rankExit struct {
	rank int
	err  error
}

func runLaunch(c *cli.Context) error {
	n := nprocFlag.Get(c)
	if n < 1 {
		return fmt.Errorf("launch: --nproc must be at least 1, got %d", n)
	}
	args := c.Args().Slice()
	if len(args) == 0 {
		return errors.New("launch: no command given (goclip launch --nproc N -- COMMAND ARGS...)")
	}
	port := masterPortFlag.Get(c)
	if port == 0 {
		var err error
		if port, err = freeTCPPort(); err != nil {
			return fmt.Errorf("launch: finding a free port: %w", err)
		}
	}
	exe, pre, err := launchSelf()
	if err != nil {
		return fmt.Errorf("launch: finding the goclip executable: %w", err)
	}

	// Signals are forwarded from here on; stop catching them when launch returns.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	var outMu sync.Mutex
	exits := make(chan rankExit, n)
	procs := make([]*exec.Cmd, 0, n)
	for r := 0; r < n; r++ {
		cmd := exec.Command(exe, append(append([]string(nil), pre...), args...)...)
		cmd.Env = append(os.Environ(),
			"RANK="+strconv.Itoa(r), "LOCAL_RANK="+strconv.Itoa(r),
			"WORLD_SIZE="+strconv.Itoa(n), "LOCAL_WORLD_SIZE="+strconv.Itoa(n),
			"GROUP_RANK=0", "MASTER_ADDR=127.0.0.1", "MASTER_PORT="+strconv.Itoa(port))
		// Own process group: a terminal's Ctrl-C reaches the ranks once, through launch.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		stdout, err := cmd.StdoutPipe()
		if err == nil {
			var stderr io.ReadCloser
			if stderr, err = cmd.StderrPipe(); err == nil {
				err = cmd.Start()
				if err == nil {
					prefix := fmt.Sprintf("[rank %d] ", r)
					go func(r int) {
						var wg sync.WaitGroup
						wg.Add(2)
						go func() { defer wg.Done(); prefixLines(c.App.Writer, &outMu, prefix, stdout) }()
						go func() { defer wg.Done(); prefixLines(c.App.ErrWriter, &outMu, prefix, stderr) }()
						wg.Wait() // all output read before Wait closes the pipes
						exits <- rankExit{r, cmd.Wait()}
					}(r)
				}
			}
		}
		if err != nil {
			for _, p := range procs {
				p.Process.Kill()
			}
			for range procs {
				<-exits
			}
			return fmt.Errorf("launch: starting rank %d: %w", r, err)
		}
		procs = append(procs, cmd)
	}

	signalAll := func(s os.Signal, done []bool) {
		for r, p := range procs {
			if !done[r] {
				p.Process.Signal(s)
			}
		}
	}
	done := make([]bool, n)
	var failed *rankExit
	var interrupted os.Signal
	var kill <-chan time.Time
	for left := n; left > 0; {
		select {
		case e := <-exits:
			left--
			done[e.rank] = true
			if e.err != nil && failed == nil && interrupted == nil {
				failed = &e
				outMu.Lock()
				fmt.Fprintf(c.App.ErrWriter, "launch: rank %d failed (%v); stopping the other ranks\n", e.rank, e.err)
				outMu.Unlock()
				signalAll(syscall.SIGTERM, done)
				kill = time.After(graceFlag.Get(c))
			}
		case s := <-sigs:
			if interrupted != nil { // a second signal: no more waiting
				signalAll(syscall.SIGKILL, done)
				continue
			}
			interrupted = s
			signalAll(s, done)
			kill = time.After(graceFlag.Get(c))
		case <-kill:
			signalAll(syscall.SIGKILL, done)
		}
	}
	switch {
	case failed != nil:
		return fmt.Errorf("launch: rank %d of %d failed: %v", failed.rank, n, failed.err)
	case interrupted != nil:
		return fmt.Errorf("launch: interrupted by %v", interrupted)
	}
	return nil
}
