package torch

/*
#include <stdlib.h>
#include "goclip_torch.h"
*/
import "C"

import (
	"fmt"
	"os"
	"strconv"
	"time"
	"unsafe"
)

// ProcessGroup is a group of processes (ranks) that run collectives together through
// PyTorch's c10d: a TCPStore rendezvous and a Gloo (CPU) or NCCL (CUDA) backend. Every
// rank must call the same collectives, on tensors of the same shapes, in the same order.
// A collective that does not finish within the group's timeout, or whose peer died,
// returns an error naming the operation and this rank; it never hangs past the timeout
// (on Gloo; NCCL's own watchdog enforces it there).
//
// A ProcessGroup is used from one goroutine at a time.
type ProcessGroup struct {
	h       C.gt_pg
	backend string
	rank    int
	world   int
	timeout time.Duration
}

// ReduceOp is the reduction of AllReduceOp.
type ReduceOp int

const (
	ReduceSum ReduceOp = C.GT_REDUCE_SUM
	ReduceAvg ReduceOp = C.GT_REDUCE_AVG // the sum divided by the world size
	ReduceMax ReduceOp = C.GT_REDUCE_MAX
	ReduceMin ReduceOp = C.GT_REDUCE_MIN
)

func backendCode(name string) (C.int, error) {
	switch name {
	case "gloo":
		return C.GT_GLOO, nil
	case "nccl":
		return C.GT_NCCL, nil
	}
	return 0, fmt.Errorf("torch: unknown distributed backend %q (want gloo or nccl)", name)
}

// HasBackend reports whether the shim was built with a distributed backend ("gloo",
// "nccl").
func HasBackend(name string) bool {
	code, err := backendCode(name)
	return err == nil && C.gt_dist_has_backend(code) != 0
}

// DefaultBackend is the backend for tensors on d: nccl for CUDA where the shim has it,
// gloo otherwise.
func DefaultBackend(d Device) string {
	if d.Type == CUDADevice && HasBackend("nccl") {
		return "nccl"
	}
	return "gloo"
}

// NewProcessGroup joins rank (of world) to a process group: rank 0 hosts the rendezvous
// store on addr:port and the others connect to it. It returns when every rank has joined,
// or with an error after timeout, which also bounds every collective of the group.
func NewProcessGroup(backend string, rank, world int, addr string, port int, timeout time.Duration) (*ProcessGroup, error) {
	code, err := backendCode(backend)
	if err != nil {
		return nil, err
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("torch: process group timeout must be positive, got %v", timeout)
	}
	caddr := C.CString(addr)
	defer C.free(unsafe.Pointer(caddr))
	var h C.gt_pg
	s := C.gt_pg_new(code, C.int(rank), C.int(world), caddr, C.int(port), C.int64_t(timeout.Milliseconds()), &h)
	if err := statusErr("dist", s); err != nil {
		return nil, err
	}
	return &ProcessGroup{h: h, backend: backend, rank: rank, world: world, timeout: timeout}, nil
}

// Rank is this process's rank, 0 to World()-1.
func (pg *ProcessGroup) Rank() int { return pg.rank }

// World is the number of ranks.
func (pg *ProcessGroup) World() int { return pg.world }

// Backend is "gloo" or "nccl".
func (pg *ProcessGroup) Backend() string { return pg.backend }

// Timeout bounds the rendezvous and every collective.
func (pg *ProcessGroup) Timeout() time.Duration { return pg.timeout }

// Close releases the group. It is idempotent and safe on nil. A graph made by
// GatherWithGrad that has not been freed keeps the backend alive until it is.
func (pg *ProcessGroup) Close() {
	if pg == nil || pg.h == nil {
		return
	}
	C.gt_pg_free(pg.h)
	pg.h = nil
}

func (pg *ProcessGroup) handle(op string) (C.gt_pg, error) {
	if pg == nil || pg.h == nil {
		return nil, &Error{Op: op, Msg: "use of a nil or closed process group"}
	}
	return pg.h, nil
}

// AllReduce sums ts in place over all ranks. Tensors of one dtype and device that follow
// each other travel in one flat buffer (one collective).
func (pg *ProcessGroup) AllReduce(ts ...*Tensor) error { return pg.AllReduceOp(ReduceSum, ts...) }

// AllReduceOp reduces ts in place over all ranks with op.
func (pg *ProcessGroup) AllReduceOp(op ReduceOp, ts ...*Tensor) error {
	h, err := pg.handle("all_reduce")
	if err != nil || len(ts) == 0 {
		return err
	}
	return Try(func() {
		hs := handles("all_reduce", ts)
		must("dist", C.gt_pg_all_reduce(h, first(hs), C.int(len(hs)), C.int(op)))
		keep(ts...)
	})
}

// AllGather concatenates t [b_r, ...] from every rank along dimension 0, in rank order,
// into a new tensor [sum of b_r, ...]. The row counts b_r may differ by rank; the other
// sizes, the dtype and the device may not. The result has no gradient.
func (pg *ProcessGroup) AllGather(t *Tensor) (out *Tensor, err error) {
	h, err := pg.handle("all_gather")
	if err != nil {
		return nil, err
	}
	err = Try(func() {
		var o C.gt_tensor
		must("dist", C.gt_pg_all_gather(h, t.handle("all_gather"), &o))
		keep(t)
		out = wrap(o)
	})
	return out, err
}

// GatherWithGrad is AllGather with autograd: the forward concatenates t [b_r, D] of every
// rank into [N, D]; the backward sums the gradient of that result over all ranks and
// hands each rank the rows it contributed. With a loss on every rank that uses the
// gathered rows (a contrastive loss over the global batch), each rank's features then
// receive the gradient of the sum of all ranks' losses. Like other tensor operations it
// panics with a *Error on failure, including a failed collective.
func (pg *ProcessGroup) GatherWithGrad(t *Tensor) *Tensor {
	h, err := pg.handle("gather_with_grad")
	if err != nil {
		panic(err)
	}
	var out C.gt_tensor
	must("dist", C.gt_pg_gather_with_grad(h, t.handle("gather_with_grad"), &out))
	keep(t)
	return wrap(out)
}

// Broadcast overwrites t on every rank with root's values.
func (pg *ProcessGroup) Broadcast(t *Tensor, root int) error {
	h, err := pg.handle("broadcast")
	if err != nil {
		return err
	}
	return Try(func() {
		must("dist", C.gt_pg_broadcast(h, t.handle("broadcast"), C.int(root)))
		keep(t)
	})
}

// Barrier returns when every rank has called it.
func (pg *ProcessGroup) Barrier() error {
	h, err := pg.handle("barrier")
	if err != nil {
		return err
	}
	return statusErr("dist", C.gt_pg_barrier(h))
}

// Rendezvous is where and as whom this process joins a process group, as torchrun (and
// goclip launch, or SLURM with these variables exported) describes it in the environment.
type Rendezvous struct {
	Rank      int    // RANK: global rank
	World     int    // WORLD_SIZE: number of ranks
	LocalRank int    // LOCAL_RANK: rank on this machine (which GPU to use)
	Addr      string // MASTER_ADDR: rank 0's host
	Port      int    // MASTER_PORT: rank 0's store port
	FromEnv   bool   // WORLD_SIZE was set: this process was started by a launcher
}

// EnvRendezvous reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Without
// WORLD_SIZE it returns a single-process rendezvous (rank 0 of 1, FromEnv false). With
// it, every variable must be present and valid, except LOCAL_RANK (default: RANK) and,
// for a world of one, MASTER_ADDR and MASTER_PORT (default 127.0.0.1:29500).
func EnvRendezvous() (Rendezvous, error) {
	r := Rendezvous{World: 1, Addr: "127.0.0.1", Port: 29500}
	ws, ok := os.LookupEnv("WORLD_SIZE")
	if !ok || ws == "" {
		return r, nil
	}
	r.FromEnv = true
	num := func(name, v string, lo, hi int) (int, error) {
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			return 0, fmt.Errorf("torch: %s=%q is not an integer in [%d, %d]", name, v, lo, hi)
		}
		return n, nil
	}
	var err error
	if r.World, err = num("WORLD_SIZE", ws, 1, 1<<20); err != nil {
		return r, err
	}
	if r.Rank, err = num("RANK", os.Getenv("RANK"), 0, r.World-1); err != nil {
		return r, err
	}
	r.LocalRank = r.Rank
	if v, ok := os.LookupEnv("LOCAL_RANK"); ok {
		if r.LocalRank, err = num("LOCAL_RANK", v, 0, r.World-1); err != nil {
			return r, err
		}
	}
	if v := os.Getenv("MASTER_ADDR"); v != "" {
		r.Addr = v
	} else if r.World > 1 {
		return r, fmt.Errorf("torch: WORLD_SIZE=%d but MASTER_ADDR is not set", r.World)
	}
	if v := os.Getenv("MASTER_PORT"); v != "" {
		if r.Port, err = num("MASTER_PORT", v, 1, 65535); err != nil {
			return r, err
		}
	} else if r.World > 1 {
		return r, fmt.Errorf("torch: WORLD_SIZE=%d but MASTER_PORT is not set", r.World)
	}
	return r, nil
}

// NewProcessGroup joins the process group the rendezvous describes.
func (r Rendezvous) NewProcessGroup(backend string, timeout time.Duration) (*ProcessGroup, error) {
	return NewProcessGroup(backend, r.Rank, r.World, r.Addr, r.Port, timeout)
}
