/*
 * goclip_torch.h: the pure-C ABI of goclip's libtorch shim (libgoclip_torch.so).
 *
 * The Go package goclip/torch is the only caller. The shim is rebuilt against whichever
 * libtorch a machine has (Debian's 1.13 CPU build, PyTorch 2.x's CUDA wheel); the Go
 * binary links only this ABI, so it runs unchanged with any of them.
 *
 * Conventions, for every function below:
 *  - Status: functions returning gt_status return NULL on success, or a message allocated
 *    with malloc that the caller releases with free(). No C++ exception ever crosses
 *    this boundary.
 *  - Results are written to out-parameters. A gt_tensor written to an out-parameter is
 *    OWNED BY THE CALLER, who releases it with gt_free. Input tensors are BORROWED.
 *  - Host buffers passed in are only read (or written) during the call and never kept:
 *    data is copied into torch-owned memory.
 *  - Thread-local libtorch state (grad mode, autocast) applies to the calling OS thread.
 */
#ifndef GOCLIP_TORCH_H
#define GOCLIP_TORCH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef void *gt_tensor; /* an at::Tensor owned through this handle */
typedef char *gt_status; /* NULL = success; else malloc'd message */

/* Dtype codes; goclip/torch mirrors them. */
enum {
  GT_F32 = 0, GT_F16 = 1, GT_BF16 = 2, GT_F64 = 3, GT_I64 = 4,
  GT_I32 = 5, GT_U8 = 6, GT_BOOL = 7, GT_I8 = 8, GT_I16 = 9
};
/* Device types. */
enum { GT_CPU = 0, GT_CUDA = 1 };

/* ---- library (tensor.cc) ---- */
/* Writes the libtorch version ("1.13.1"), into buf of length n. */
gt_status gt_version(char *buf, int n);
gt_status gt_set_num_threads(int n);
gt_status gt_get_num_threads(int *out);
gt_status gt_manual_seed(uint64_t seed);
/* RNG state of the default generator of a device, as a uint8 CPU tensor (owned). */
gt_status gt_rng_state(int dev_type, int dev_index, gt_tensor *out);
gt_status gt_set_rng_state(int dev_type, int dev_index, gt_tensor state);

/* ---- tensors (tensor.cc) ---- */
void gt_free(gt_tensor t); /* NULL allowed; never fails */
/* Copies nbytes of host data into a new tensor of the given shape and dtype on a device. */
gt_status gt_from_data(const void *data, int64_t nbytes, const int64_t *shape, int ndim,
                       int dtype, int dev_type, int dev_index, gt_tensor *out);
/* gt_from_data for a CPU tensor in page-locked memory (ordinary memory where CUDA is
   absent): one copy, where gt_from_data then gt_pin_memory make two. */
gt_status gt_from_data_pinned(const void *data, int64_t nbytes, const int64_t *shape, int ndim,
                              int dtype, gt_tensor *out);
/* Copies a tensor's values (converted to contiguous CPU layout) into dst (nbytes exactly). */
gt_status gt_to_host(gt_tensor t, void *dst, int64_t nbytes);
/* Shape: writes ndim and up to 16 sizes. */
gt_status gt_shape(gt_tensor t, int *ndim, int64_t *sizes);
gt_status gt_info(gt_tensor t, int *dtype, int *dev_type, int *dev_index, int *requires_grad);
gt_status gt_item(gt_tensor t, double *out);
gt_status gt_full(const int64_t *shape, int ndim, double value, int dtype, int dev_type,
                  int dev_index, gt_tensor *out);
/* kind: 0 rand U[0,1), 1 randn N(0,1). */
gt_status gt_random(int kind, const int64_t *shape, int ndim, int dtype, int dev_type,
                    int dev_index, gt_tensor *out);
gt_status gt_randint(int64_t low, int64_t high, const int64_t *shape, int ndim, int dev_type,
                     int dev_index, gt_tensor *out);
gt_status gt_arange(double start, double end, double step, int dtype, int dev_type,
                    int dev_index, gt_tensor *out);
gt_status gt_to(gt_tensor t, int dtype, int dev_type, int dev_index, int non_blocking,
                gt_tensor *out);
/* A CPU tensor copied into page-locked memory (a plain copy where CUDA is absent). */
gt_status gt_pin_memory(gt_tensor t, gt_tensor *out);
gt_status gt_clone(gt_tensor t, gt_tensor *out);
/* A new handle sharing t's storage and autograd history (a shallow copy). */
gt_status gt_alias(gt_tensor t, gt_tensor *out);

/* ---- autograd (autograd.cc) ---- */
gt_status gt_set_requires_grad(gt_tensor t, int on);
/* The gradient (owned), or NULL in *out when there is none. */
gt_status gt_grad(gt_tensor t, gt_tensor *out);
gt_status gt_set_grad(gt_tensor t, gt_tensor grad); /* grad NULL: clear */
/* Backward from t; grad may be NULL for a scalar t. */
gt_status gt_backward(gt_tensor t, gt_tensor grad, int retain_graph);
gt_status gt_detach(gt_tensor t, gt_tensor *out);
gt_status gt_grad_enabled(int *out);
gt_status gt_set_grad_enabled(int on);

/* ---- elementwise and reductions by op code (ops.cc) ---- */
enum {
  GT_NEG, GT_EXP, GT_LOG, GT_SQRT, GT_RSQRT, GT_ABS, GT_TANH, GT_SIGMOID, GT_RELU,
  GT_GELU, GT_GELU_TANH, GT_QUICK_GELU, GT_SIN, GT_COS, GT_ISFINITE, GT_LOGICAL_NOT,
  GT_FLOOR, GT_SQUARE, GT_CONTIGUOUS, GT_SIGN, GT_ROUND
};
gt_status gt_unary(int op, gt_tensor a, gt_tensor *out);
enum {
  GT_ADD, GT_SUB, GT_MUL, GT_DIV, GT_MATMUL, GT_POW, GT_MAXIMUM, GT_MINIMUM,
  GT_EQ, GT_NE, GT_LT, GT_LE, GT_GT, GT_GE, GT_LOGICAL_AND, GT_LOGICAL_OR
};
gt_status gt_binary(int op, gt_tensor a, gt_tensor b, gt_tensor *out);
/* Binary op codes with a scalar right operand, plus: */
enum { GT_RSUB = 100, GT_CLAMP_MIN = 101, GT_CLAMP_MAX = 102 };
gt_status gt_binary_scalar(int op, gt_tensor a, double b, gt_tensor *out);
enum { GT_SUM, GT_MEAN, GT_AMAX, GT_AMIN, GT_LOGSUMEXP, GT_VAR, GT_STD, GT_ALL, GT_ANY,
       GT_ARGMAX, GT_ARGMIN, GT_PROD };
/* Reduction over dims (ndims 0 = all dims; ARGMAX/ARGMIN/LOGSUMEXP/PROD take one dim). */
gt_status gt_reduce(int op, gt_tensor a, const int64_t *dims, int ndims, int keepdim,
                    gt_tensor *out);

/* ---- shaped and neural-network ops (ops.cc) ---- */
gt_status gt_reshape(gt_tensor a, const int64_t *shape, int ndim, gt_tensor *out);
gt_status gt_view(gt_tensor a, const int64_t *shape, int ndim, gt_tensor *out);
gt_status gt_expand(gt_tensor a, const int64_t *shape, int ndim, gt_tensor *out);
gt_status gt_permute(gt_tensor a, const int64_t *dims, int ndim, gt_tensor *out);
gt_status gt_transpose(gt_tensor a, int64_t d0, int64_t d1, gt_tensor *out);
gt_status gt_unsqueeze(gt_tensor a, int64_t dim, gt_tensor *out);
gt_status gt_squeeze(gt_tensor a, int64_t dim, gt_tensor *out);
gt_status gt_flatten(gt_tensor a, int64_t start, int64_t end, gt_tensor *out);
gt_status gt_narrow(gt_tensor a, int64_t dim, int64_t start, int64_t length, gt_tensor *out);
gt_status gt_select(gt_tensor a, int64_t dim, int64_t index, gt_tensor *out);
gt_status gt_index_select(gt_tensor a, int64_t dim, gt_tensor index, gt_tensor *out);
gt_status gt_gather(gt_tensor a, int64_t dim, gt_tensor index, gt_tensor *out);
/* kind 0: cat, 1: stack. */
gt_status gt_cat(const gt_tensor *ts, int n, int64_t dim, int kind, gt_tensor *out);
gt_status gt_where(gt_tensor cond, gt_tensor a, gt_tensor b, gt_tensor *out);
gt_status gt_masked_fill(gt_tensor a, gt_tensor mask, double value, gt_tensor *out);
/* kind 0: triu, 1: tril. */
gt_status gt_tri(gt_tensor a, int64_t diagonal, int kind, gt_tensor *out);
gt_status gt_clamp(gt_tensor a, double lo, double hi, gt_tensor *out);
gt_status gt_linear(gt_tensor x, gt_tensor w, gt_tensor b /* may be NULL */, gt_tensor *out);
gt_status gt_layer_norm(gt_tensor x, const int64_t *shape, int ndim, gt_tensor w, gt_tensor b,
                        double eps, gt_tensor *out);
/* kind 0: softmax, 1: log_softmax. */
gt_status gt_softmax(gt_tensor x, int64_t dim, int kind, gt_tensor *out);
/* Mean cross-entropy of logits [N, C] against class indices [N]. */
gt_status gt_cross_entropy(gt_tensor logits, gt_tensor target, gt_tensor *out);
gt_status gt_conv2d(gt_tensor x, gt_tensor w, gt_tensor b /* may be NULL */, int64_t stride,
                    int64_t padding, gt_tensor *out);
gt_status gt_embedding(gt_tensor weight, gt_tensor indices, gt_tensor *out);
gt_status gt_dropout(gt_tensor x, double p, int train, gt_tensor *out);
gt_status gt_norm(gt_tensor x, double p, const int64_t *dims, int ndims, int keepdim,
                  gt_tensor *out);
/* x / max(||x||_p over dim, eps). */
gt_status gt_normalize(gt_tensor x, double p, int64_t dim, double eps, gt_tensor *out);
gt_status gt_topk(gt_tensor x, int64_t k, int64_t dim, int largest, gt_tensor *values,
                  gt_tensor *indices);
/* Attention over q, k, v [B, H, T, Dh]; mask (additive float or bool keep-mask) may be
 * NULL. Uses at::scaled_dot_product_attention on libtorch >= 2.0, otherwise the same
 * computation spelled out (softmax(q k^T * scale + mask) v). use_fused 0 forces the
 * spelled-out path. */
gt_status gt_attention(gt_tensor q, gt_tensor k, gt_tensor v, gt_tensor mask, int is_causal,
                       double dropout_p, int use_fused, gt_tensor *out);

/* ---- in place, outside autograd (ops.cc) ---- */
enum { GT_COPY_, GT_ADD_, GT_MUL_, GT_FILL_, GT_ZERO_, GT_CLAMP_MAX_, GT_CLAMP_MIN_,
       GT_NORMAL_, GT_UNIFORM_ };
/* a op= (b or s0, s1): COPY_ b; ADD_ b*s0 (b NULL: s0); MUL_ b or s0; FILL_ s0;
 * CLAMP_*_ s0; NORMAL_ mean s0 std s1; UNIFORM_ from s0 to s1. Runs under no-grad. */
gt_status gt_inplace(int op, gt_tensor a, gt_tensor b, double s0, double s1);
gt_status gt_equal(gt_tensor a, gt_tensor b, int *out);

/* ---- optimizer and mixed precision (optim.cc, amp.cc) ---- */
/* One AdamW step (torch.optim.AdamW semantics, decoupled weight decay) over n parameters
 * with their state tensors. Parameters without a gradient are skipped. step: a one-value
 * tensor on the parameters' device holding the 1-based step count after this update.
 * found_inf (NULL: none): a one-value tensor there; non-zero leaves every parameter and
 * state as it was (the skipped step of a loss scaler or a non-finite gradient). fused: use
 * the fused kernel where this build has one for the parameters' device (CUDA: it reads
 * step and found_inf on the device; otherwise both are read on the host, free on the CPU). */
gt_status gt_adamw_step(const gt_tensor *params, const gt_tensor *exp_avg,
                        const gt_tensor *exp_avg_sq, int n, double lr, double beta1,
                        double beta2, double eps, double weight_decay, gt_tensor step,
                        gt_tensor found_inf, int fused);
/* Total 2-norm of the gradients (a 0-dim float tensor, owned); scales the gradients by
 * min(1, max_norm / (total + 1e-6)) when max_norm > 0. No host synchronisation. */
gt_status gt_clip_grad_norm(const gt_tensor *params, int n, double max_norm,
                            gt_tensor *total_norm);
/* Multiplies every gradient by inv_scale (a one-value tensor, used as float32) and returns
 * a 0-dim float tensor (owned) that is 1 when any gradient had a non-finite value, else 0.
 * No host synchronisation. */
gt_status gt_unscale_grads(const gt_tensor *params, int n, gt_tensor inv_scale,
                           gt_tensor *found_inf);
/* Autocast on the calling thread: device type GT_CPU or GT_CUDA, dtype GT_BF16/GT_F16.
 * enter enables it and increments the nesting; exit restores the previous state. */
gt_status gt_autocast_enter(int dev_type, int dtype, int *prev_enabled, int *prev_dtype);
gt_status gt_autocast_exit(int dev_type, int prev_enabled, int prev_dtype);

/* ---- CUDA (cuda.cc) ---- */
gt_status gt_cuda_available(int *out);
gt_status gt_cuda_device_count(int *out);
gt_status gt_cuda_synchronize(int dev_index);
/* Allocated bytes now and at peak since the last reset, by the caching allocator. */
gt_status gt_cuda_memory(int dev_index, int64_t *allocated, int64_t *peak);
gt_status gt_cuda_reset_peak(int dev_index);
/* Name into buf (n bytes), total memory, compute capability, multiprocessor count. */
gt_status gt_cuda_properties(int dev_index, char *buf, int n, int64_t *total_memory,
                             int *major, int *minor, int *sm_count);
/* Asynchronous host-to-device copies on a side stream (one "copy stream" per device).
 * gt_copy_async copies the n CPU tensors ts (pinned, for the copy to overlap) to CUDA
 * device dev_index on that device's copy stream, without blocking the host, and records
 * an event after them: outs[i] are the device tensors (owned), *done the copy (owned;
 * gt_copy_free). gt_copy_wait makes the device's current stream wait for the copy (the
 * host does not wait) and marks the device tensors ts as used on the current stream for
 * the caching allocator; call it before reading them. Without CUDA both are errors. */
typedef void *gt_copy;
gt_status gt_copy_async(const gt_tensor *ts, int n, int dev_index, gt_tensor *outs,
                        gt_copy *done);
gt_status gt_copy_wait(gt_copy done, const gt_tensor *ts, int n);
void gt_copy_free(gt_copy done); /* NULL allowed; never fails */
/* 1 when the shim was built with CUDA support (headers and libraries). */
int gt_built_with_cuda(void);

/* ---- distributed (distributed.cc) ---- */
/* A c10d process group: TCPStore rendezvous plus a Gloo or NCCL backend. Owned by the
 * caller (gt_pg_free). Collectives block until done or until the group's timeout; a
 * timeout or a dead peer comes back as a status naming the op, rank and backend. Every
 * rank must call the same collectives in the same order. */
typedef void *gt_pg;
enum { GT_GLOO = 0, GT_NCCL = 1 };
enum { GT_REDUCE_SUM = 0, GT_REDUCE_AVG = 1, GT_REDUCE_MAX = 2, GT_REDUCE_MIN = 3 };
/* 1 when this shim was built with the backend (Gloo headers; NCCL and CUDA). */
int gt_dist_has_backend(int backend);
/* Rendezvous at addr:port (rank 0 hosts the TCPStore there) with world ranks, then
 * create the backend. timeout_ms bounds the rendezvous and each collective. */
gt_status gt_pg_new(int backend, int rank, int world, const char *addr, int port,
                    int64_t timeout_ms, gt_pg *out);
void gt_pg_free(gt_pg pg); /* NULL allowed; never fails */
/* In place on every rank: runs of tensors with one dtype and device are reduced through
 * one flat buffer (one collective per run). AVG is SUM divided by the world size. */
gt_status gt_pg_all_reduce(gt_pg pg, const gt_tensor *ts, int n, int op);
/* [b_r, ...] from every rank concatenated on dim 0 in rank order (owned); b_r may differ
 * by rank, the other sizes may not. No gradient. */
gt_status gt_pg_all_gather(gt_pg pg, gt_tensor t, gt_tensor *out);
/* all_gather with autograd: backward sums the gradient over ranks and returns this
 * rank's rows. The graph keeps the group alive until it is freed. */
gt_status gt_pg_gather_with_grad(gt_pg pg, gt_tensor t, gt_tensor *out);
/* In place: every rank receives root's values. */
gt_status gt_pg_broadcast(gt_pg pg, gt_tensor t, int root);
gt_status gt_pg_barrier(gt_pg pg);

#ifdef __cplusplus
}
#endif
#endif
