// Package torch is goclip's binding to libtorch: tensors, the operations CLIP training
// needs (forward and, through libtorch's autograd, backward), AdamW, gradient clipping,
// loss-scaling primitives, autocast, RNG state, CUDA queries, asynchronous host-to-device
// copies on a side stream (CopyAsync, from pinned memory) and checkpoint files.
//
// It is goclip's cgo package for libtorch (internal/jpegturbo, built only with
// -tags jpegturbo, is the other cgo package). It calls the C ABI of the shim in torch/csrc
// (libgoclip_torch.so), never libtorch's C++ ABI, so the same Go binary runs against any
// libtorch from 2.4 on, CPU or CUDA: only the shim is rebuilt.
//
// # Error Handling
//
// Every shim call returns a status. Functions that read files, parse configuration or
// otherwise meet user input return an error. Tensor operations (Add, Matmul, Reshape, ...)
// panic with a *Error carrying libtorch's message instead, so that model code reads like
// the mathematics; [Try] turns such a panic back into an error, and the training step and
// every CLI action run inside it. A bad shape never kills the process. Inside tensor
// maths, [Must] turns a failure returned as an error (a collective, SetRNGState) into
// that panic.
//
// # Memory
//
// Tensors live in C++ memory that Go's garbage collector does not see, and they are
// released deterministically, never by GC timing. Every tensor has an idempotent Free.
// A [Scope] owns the tensors created while it is the innermost open scope and frees
// them when it closes, except those passed to Keep, which move to the enclosing scope
// (or to the caller when there is none), and those taken out with Owned, which the
// caller frees. [Live] counts tensors not yet freed; tests assert that it returns to its
// baseline. Host data is always copied into torch-owned memory: C never keeps a Go pointer.
//
// The one rule a caller follows: code that creates tensors runs inside a scope that is
// closed by defer, either [WithScope](f) or NewScope with defer s.Close() on the next
// line; what must outlive the scope leaves it by Keep (to the enclosing scope) or Owned
// (to you, to Free). Everything else, every intermediate of a chain such as
// FromFloat32(x).ToDevice(dev), is freed when the scope closes, on return or on a panic.
//
// A tensor created with no scope open has no owner but its caller. That is only for
// long-lived tensors made in one call, such as parameters, and loaded weights (Owned
// makes the intent explicit); a chain of calls with no scope open leaks every
// intermediate. train.Run opens a root scope for the whole run, and each training step
// and each evaluation batch runs in its own, so nothing is made there without an owner.
//
// Closing a scope unwinds: scopes opened inside it and still open (one whose Close a
// panic skipped) are closed first, innermost first. A *Error that escapes inner scopes
// therefore leaks nothing once an enclosing deferred Close runs, and Close never panics.
// Every panic of this package carries a *Error, which [Try] recovers.
//
// Scopes form one stack for the process: open and close them on the goroutine that runs
// the model. Data-loading goroutines hand over Go slices, not tensors.
//
// # Threads
//
// libtorch keeps grad mode and autocast per OS thread. [NoGrad] and [Autocast] lock the
// calling goroutine to its thread for the duration of the region they run. The intra-op
// thread count ([SetThreads]) is process-wide.
package torch
