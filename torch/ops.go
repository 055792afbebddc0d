package torch

/*
#include "goclip_torch.h"
*/
import "C"

import "unsafe"

// Operations panic with *Error on failure (see the package doc). Each returns a new
// tensor registered with the innermost open scope.

func (t *Tensor) unary(op C.int, name string) *Tensor {
	var out C.gt_tensor
	must(name, C.gt_unary(op, t.handle(name), &out))
	keep(t)
	return wrap(out)
}

func (t *Tensor) binary(op C.int, name string, o *Tensor) *Tensor {
	var out C.gt_tensor
	must(name, C.gt_binary(op, t.handle(name), o.handle(name), &out))
	keep(t, o)
	return wrap(out)
}

func (t *Tensor) scalar(op C.int, name string, s float64) *Tensor {
	var out C.gt_tensor
	must(name, C.gt_binary_scalar(op, t.handle(name), C.double(s), &out))
	keep(t)
	return wrap(out)
}

func (t *Tensor) reduce(op C.int, name string, keepDim bool, dims []int64) *Tensor {
	var out C.gt_tensor
	must(name, C.gt_reduce(op, t.handle(name), shapePtr(dims), C.int(len(dims)), cbool(keepDim), &out))
	keep(t)
	return wrap(out)
}

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// Elementwise functions.

func (t *Tensor) Neg() *Tensor        { return t.unary(C.GT_NEG, "neg") }
func (t *Tensor) Exp() *Tensor        { return t.unary(C.GT_EXP, "exp") }
func (t *Tensor) Log() *Tensor        { return t.unary(C.GT_LOG, "log") }
func (t *Tensor) Sqrt() *Tensor       { return t.unary(C.GT_SQRT, "sqrt") }
func (t *Tensor) Rsqrt() *Tensor      { return t.unary(C.GT_RSQRT, "rsqrt") }
func (t *Tensor) Abs() *Tensor        { return t.unary(C.GT_ABS, "abs") }
func (t *Tensor) Tanh() *Tensor       { return t.unary(C.GT_TANH, "tanh") }
func (t *Tensor) Sigmoid() *Tensor    { return t.unary(C.GT_SIGMOID, "sigmoid") }
func (t *Tensor) Relu() *Tensor       { return t.unary(C.GT_RELU, "relu") }
func (t *Tensor) Sin() *Tensor        { return t.unary(C.GT_SIN, "sin") }
func (t *Tensor) Cos() *Tensor        { return t.unary(C.GT_COS, "cos") }
func (t *Tensor) Floor() *Tensor      { return t.unary(C.GT_FLOOR, "floor") }
func (t *Tensor) Round() *Tensor      { return t.unary(C.GT_ROUND, "round") }
func (t *Tensor) Sign() *Tensor       { return t.unary(C.GT_SIGN, "sign") }
func (t *Tensor) Square() *Tensor     { return t.unary(C.GT_SQUARE, "square") }
func (t *Tensor) IsFinite() *Tensor   { return t.unary(C.GT_ISFINITE, "isfinite") }
func (t *Tensor) LogicalNot() *Tensor { return t.unary(C.GT_LOGICAL_NOT, "logical_not") }

// Contiguous returns t laid out in C order (t itself, re-wrapped, when it already is).
func (t *Tensor) Contiguous() *Tensor { return t.unary(C.GT_CONTIGUOUS, "contiguous") }

// Gelu is the exact (erf) GELU.
func (t *Tensor) Gelu() *Tensor { return t.unary(C.GT_GELU, "gelu") }

// GeluTanh is the tanh approximation of GELU ("gelu_new", "gelu_pytorch_tanh").
func (t *Tensor) GeluTanh() *Tensor { return t.unary(C.GT_GELU_TANH, "gelu_tanh") }

// QuickGelu is x * sigmoid(1.702 x), the activation of OpenAI's CLIP.
func (t *Tensor) QuickGelu() *Tensor { return t.unary(C.GT_QUICK_GELU, "quick_gelu") }

// Binary operations broadcast their operands.

func (t *Tensor) Add(o *Tensor) *Tensor        { return t.binary(C.GT_ADD, "add", o) }
func (t *Tensor) Sub(o *Tensor) *Tensor        { return t.binary(C.GT_SUB, "sub", o) }
func (t *Tensor) Mul(o *Tensor) *Tensor        { return t.binary(C.GT_MUL, "mul", o) }
func (t *Tensor) Div(o *Tensor) *Tensor        { return t.binary(C.GT_DIV, "div", o) }
func (t *Tensor) Matmul(o *Tensor) *Tensor     { return t.binary(C.GT_MATMUL, "matmul", o) }
func (t *Tensor) Pow(o *Tensor) *Tensor        { return t.binary(C.GT_POW, "pow", o) }
func (t *Tensor) Maximum(o *Tensor) *Tensor    { return t.binary(C.GT_MAXIMUM, "maximum", o) }
func (t *Tensor) Minimum(o *Tensor) *Tensor    { return t.binary(C.GT_MINIMUM, "minimum", o) }
func (t *Tensor) Eq(o *Tensor) *Tensor         { return t.binary(C.GT_EQ, "eq", o) }
func (t *Tensor) Ne(o *Tensor) *Tensor         { return t.binary(C.GT_NE, "ne", o) }
func (t *Tensor) Lt(o *Tensor) *Tensor         { return t.binary(C.GT_LT, "lt", o) }
func (t *Tensor) Le(o *Tensor) *Tensor         { return t.binary(C.GT_LE, "le", o) }
func (t *Tensor) Gt(o *Tensor) *Tensor         { return t.binary(C.GT_GT, "gt", o) }
func (t *Tensor) Ge(o *Tensor) *Tensor         { return t.binary(C.GT_GE, "ge", o) }
func (t *Tensor) LogicalAnd(o *Tensor) *Tensor { return t.binary(C.GT_LOGICAL_AND, "logical_and", o) }
func (t *Tensor) LogicalOr(o *Tensor) *Tensor  { return t.binary(C.GT_LOGICAL_OR, "logical_or", o) }

// Operations with a scalar right operand.

func (t *Tensor) AddScalar(s float64) *Tensor { return t.scalar(C.GT_ADD, "add", s) }
func (t *Tensor) SubScalar(s float64) *Tensor { return t.scalar(C.GT_SUB, "sub", s) }
func (t *Tensor) MulScalar(s float64) *Tensor { return t.scalar(C.GT_MUL, "mul", s) }
func (t *Tensor) DivScalar(s float64) *Tensor { return t.scalar(C.GT_DIV, "div", s) }
func (t *Tensor) PowScalar(s float64) *Tensor { return t.scalar(C.GT_POW, "pow", s) }
func (t *Tensor) EqScalar(s float64) *Tensor  { return t.scalar(C.GT_EQ, "eq", s) }
func (t *Tensor) NeScalar(s float64) *Tensor  { return t.scalar(C.GT_NE, "ne", s) }
func (t *Tensor) LtScalar(s float64) *Tensor  { return t.scalar(C.GT_LT, "lt", s) }
func (t *Tensor) GtScalar(s float64) *Tensor  { return t.scalar(C.GT_GT, "gt", s) }

// RSubScalar is s - t.
func (t *Tensor) RSubScalar(s float64) *Tensor { return t.scalar(C.GT_RSUB, "rsub", s) }

// ClampMin is max(t, s); ClampMax is min(t, s).
func (t *Tensor) ClampMin(s float64) *Tensor { return t.scalar(C.GT_CLAMP_MIN, "clamp_min", s) }
func (t *Tensor) ClampMax(s float64) *Tensor { return t.scalar(C.GT_CLAMP_MAX, "clamp_max", s) }

// Clamp limits values to [lo, hi].
func (t *Tensor) Clamp(lo, hi float64) *Tensor {
	var out C.gt_tensor
	must("clamp", C.gt_clamp(t.handle("clamp"), C.double(lo), C.double(hi), &out))
	keep(t)
	return wrap(out)
}

// Reductions: no dims reduces over everything.

func (t *Tensor) Sum(keepDim bool, dims ...int64) *Tensor {
	return t.reduce(C.GT_SUM, "sum", keepDim, dims)
}
func (t *Tensor) Mean(keepDim bool, dims ...int64) *Tensor {
	return t.reduce(C.GT_MEAN, "mean", keepDim, dims)
}
func (t *Tensor) Amax(keepDim bool, dims ...int64) *Tensor {
	return t.reduce(C.GT_AMAX, "amax", keepDim, dims)
}
func (t *Tensor) Amin(keepDim bool, dims ...int64) *Tensor {
	return t.reduce(C.GT_AMIN, "amin", keepDim, dims)
}
func (t *Tensor) Var(keepDim bool, dims ...int64) *Tensor {
	return t.reduce(C.GT_VAR, "var", keepDim, dims)
}
func (t *Tensor) Std(keepDim bool, dims ...int64) *Tensor {
	return t.reduce(C.GT_STD, "std", keepDim, dims)
}
func (t *Tensor) All() *Tensor { return t.reduce(C.GT_ALL, "all", false, nil) }
func (t *Tensor) Any() *Tensor { return t.reduce(C.GT_ANY, "any", false, nil) }

// LogSumExp over one dimension.
func (t *Tensor) LogSumExp(dim int64, keepDim bool) *Tensor {
	return t.reduce(C.GT_LOGSUMEXP, "logsumexp", keepDim, []int64{dim})
}

// Argmax over one dimension (int64 indices).
func (t *Tensor) Argmax(dim int64, keepDim bool) *Tensor {
	return t.reduce(C.GT_ARGMAX, "argmax", keepDim, []int64{dim})
}

// Argmin over one dimension (int64 indices).
func (t *Tensor) Argmin(dim int64, keepDim bool) *Tensor {
	return t.reduce(C.GT_ARGMIN, "argmin", keepDim, []int64{dim})
}

// Shape manipulation.

func (t *Tensor) shapeOp(name string, f func(C.gt_tensor, *C.int64_t, C.int, *C.gt_tensor) C.gt_status, shape []int64) *Tensor {
	var out C.gt_tensor
	must(name, f(t.handle(name), shapePtr(shape), C.int(len(shape)), &out))
	keep(t)
	return wrap(out)
}

func cReshape(a C.gt_tensor, s *C.int64_t, n C.int, o *C.gt_tensor) C.gt_status {
	return C.gt_reshape(a, s, n, o)
}
func cView(a C.gt_tensor, s *C.int64_t, n C.int, o *C.gt_tensor) C.gt_status {
	return C.gt_view(a, s, n, o)
}
func cExpand(a C.gt_tensor, s *C.int64_t, n C.int, o *C.gt_tensor) C.gt_status {
	return C.gt_expand(a, s, n, o)
}
func cPermute(a C.gt_tensor, s *C.int64_t, n C.int, o *C.gt_tensor) C.gt_status {
	return C.gt_permute(a, s, n, o)
}

// Reshape to a new shape (one size may be -1); a view when possible.
func (t *Tensor) Reshape(shape ...int64) *Tensor { return t.shapeOp("reshape", cReshape, shape) }

// View is Reshape that never copies (fails on incompatible strides).
func (t *Tensor) View(shape ...int64) *Tensor { return t.shapeOp("view", cView, shape) }

// Expand broadcasts size-1 dimensions to the given shape (-1 keeps a size).
func (t *Tensor) Expand(shape ...int64) *Tensor { return t.shapeOp("expand", cExpand, shape) }

// Permute reorders dimensions.
func (t *Tensor) Permute(dims ...int64) *Tensor { return t.shapeOp("permute", cPermute, dims) }

// Transpose swaps two dimensions.
func (t *Tensor) Transpose(d0, d1 int64) *Tensor {
	var out C.gt_tensor
	must("transpose", C.gt_transpose(t.handle("transpose"), C.int64_t(d0), C.int64_t(d1), &out))
	keep(t)
	return wrap(out)
}

// T is the transpose of a matrix.
func (t *Tensor) T() *Tensor { return t.Transpose(0, 1) }

// Unsqueeze inserts a dimension of size one.
func (t *Tensor) Unsqueeze(dim int64) *Tensor {
	var out C.gt_tensor
	must("unsqueeze", C.gt_unsqueeze(t.handle("unsqueeze"), C.int64_t(dim), &out))
	keep(t)
	return wrap(out)
}

// Squeeze removes a dimension of size one.
func (t *Tensor) Squeeze(dim int64) *Tensor {
	var out C.gt_tensor
	must("squeeze", C.gt_squeeze(t.handle("squeeze"), C.int64_t(dim), &out))
	keep(t)
	return wrap(out)
}

// Flatten merges dimensions start..end (inclusive).
func (t *Tensor) Flatten(start, end int64) *Tensor {
	var out C.gt_tensor
	must("flatten", C.gt_flatten(t.handle("flatten"), C.int64_t(start), C.int64_t(end), &out))
	keep(t)
	return wrap(out)
}

// Narrow is the slice [start, start+length) of one dimension (a view).
func (t *Tensor) Narrow(dim, start, length int64) *Tensor {
	var out C.gt_tensor
	must("narrow", C.gt_narrow(t.handle("narrow"), C.int64_t(dim), C.int64_t(start), C.int64_t(length), &out))
	keep(t)
	return wrap(out)
}

// Select indexes one dimension, removing it (a view).
func (t *Tensor) Select(dim, index int64) *Tensor {
	var out C.gt_tensor
	must("select", C.gt_select(t.handle("select"), C.int64_t(dim), C.int64_t(index), &out))
	keep(t)
	return wrap(out)
}

// IndexSelect picks entries of one dimension by an int64 index vector.
func (t *Tensor) IndexSelect(dim int64, index *Tensor) *Tensor {
	var out C.gt_tensor
	must("index_select", C.gt_index_select(t.handle("index_select"), C.int64_t(dim), index.handle("index_select"), &out))
	keep(t, index)
	return wrap(out)
}

// Gather picks t[..., index[...], ...] along dim.
func (t *Tensor) Gather(dim int64, index *Tensor) *Tensor {
	var out C.gt_tensor
	must("gather", C.gt_gather(t.handle("gather"), C.int64_t(dim), index.handle("gather"), &out))
	keep(t, index)
	return wrap(out)
}

func catStack(name string, kind int, ts []*Tensor, dim int64) *Tensor {
	if len(ts) == 0 {
		panic(&Error{Op: name, Msg: "no tensors"})
	}
	hs := make([]C.gt_tensor, len(ts))
	for i, t := range ts {
		hs[i] = t.handle(name)
	}
	// hs holds C pointers only, so passing it to C is allowed.
	var out C.gt_tensor
	must(name, C.gt_cat((*C.gt_tensor)(unsafe.Pointer(&hs[0])), C.int(len(hs)), C.int64_t(dim), C.int(kind), &out))
	keep(ts...)
	return wrap(out)
}

// Cat concatenates along an existing dimension.
func Cat(ts []*Tensor, dim int64) *Tensor { return catStack("cat", 0, ts, dim) }

// Stack joins along a new dimension.
func Stack(ts []*Tensor, dim int64) *Tensor { return catStack("stack", 1, ts, dim) }

// Where picks a where cond is true, else b.
func Where(cond, a, b *Tensor) *Tensor {
	var out C.gt_tensor
	must("where", C.gt_where(cond.handle("where"), a.handle("where"), b.handle("where"), &out))
	keep(cond, a, b)
	return wrap(out)
}

// MaskedFill sets entries where mask is true to v.
func (t *Tensor) MaskedFill(mask *Tensor, v float64) *Tensor {
	var out C.gt_tensor
	must("masked_fill", C.gt_masked_fill(t.handle("masked_fill"), mask.handle("masked_fill"), C.double(v), &out))
	keep(t, mask)
	return wrap(out)
}

// Triu keeps the upper triangle from the given diagonal; Tril the lower.
func (t *Tensor) Triu(diagonal int64) *Tensor { return t.tri(diagonal, 0, "triu") }
func (t *Tensor) Tril(diagonal int64) *Tensor { return t.tri(diagonal, 1, "tril") }

func (t *Tensor) tri(d int64, kind int, name string) *Tensor {
	var out C.gt_tensor
	must(name, C.gt_tri(t.handle(name), C.int64_t(d), C.int(kind), &out))
	keep(t)
	return wrap(out)
}

func optHandle(t *Tensor, op string) C.gt_tensor {
	if t == nil {
		return nil
	}
	return t.handle(op)
}

// Linear is x W^T + b; b may be nil.
func Linear(x, w, b *Tensor) *Tensor {
	var out C.gt_tensor
	must("linear", C.gt_linear(x.handle("linear"), w.handle("linear"), optHandle(b, "linear"), &out))
	keep(x, w, b)
	return wrap(out)
}

// LayerNorm normalises over the trailing dimensions given by shape; w and b may be nil.
func LayerNorm(x *Tensor, shape []int64, w, b *Tensor, eps float64) *Tensor {
	var out C.gt_tensor
	must("layer_norm", C.gt_layer_norm(x.handle("layer_norm"), shapePtr(shape), C.int(len(shape)),
		optHandle(w, "layer_norm"), optHandle(b, "layer_norm"), C.double(eps), &out))
	keep(x, w, b)
	return wrap(out)
}

// Softmax over a dimension.
func (t *Tensor) Softmax(dim int64) *Tensor { return t.softmax(dim, 0, "softmax") }

// LogSoftmax over a dimension.
func (t *Tensor) LogSoftmax(dim int64) *Tensor { return t.softmax(dim, 1, "log_softmax") }

func (t *Tensor) softmax(dim int64, kind int, name string) *Tensor {
	var out C.gt_tensor
	must(name, C.gt_softmax(t.handle(name), C.int64_t(dim), C.int(kind), &out))
	keep(t)
	return wrap(out)
}

// CrossEntropy is the mean cross-entropy of logits [N, C] against int64 targets [N].
func CrossEntropy(logits, target *Tensor) *Tensor {
	var out C.gt_tensor
	must("cross_entropy", C.gt_cross_entropy(logits.handle("cross_entropy"), target.handle("cross_entropy"), &out))
	keep(logits, target)
	return wrap(out)
}

// Conv2d with square stride and padding; b may be nil.
func Conv2d(x, w, b *Tensor, stride, padding int64) *Tensor {
	var out C.gt_tensor
	must("conv2d", C.gt_conv2d(x.handle("conv2d"), w.handle("conv2d"), optHandle(b, "conv2d"), C.int64_t(stride), C.int64_t(padding), &out))
	keep(x, w, b)
	return wrap(out)
}

// Embedding looks up rows of weight by int64 indices.
func Embedding(weight, indices *Tensor) *Tensor {
	var out C.gt_tensor
	must("embedding", C.gt_embedding(weight.handle("embedding"), indices.handle("embedding"), &out))
	keep(weight, indices)
	return wrap(out)
}

// Dropout zeroes entries with probability p and scales the rest by 1/(1-p) when train
// is true; otherwise it returns t unchanged (a new handle).
func (t *Tensor) Dropout(p float64, train bool) *Tensor {
	var out C.gt_tensor
	must("dropout", C.gt_dropout(t.handle("dropout"), C.double(p), cbool(train), &out))
	keep(t)
	return wrap(out)
}

// Norm is the p-norm over dims (all when none).
func (t *Tensor) Norm(p float64, keepDim bool, dims ...int64) *Tensor {
	var out C.gt_tensor
	must("norm", C.gt_norm(t.handle("norm"), C.double(p), shapePtr(dims), C.int(len(dims)), cbool(keepDim), &out))
	keep(t)
	return wrap(out)
}

// Normalize divides by the p-norm over dim, floored at eps (torch.nn.functional.normalize).
func (t *Tensor) Normalize(p float64, dim int64, eps float64) *Tensor {
	var out C.gt_tensor
	must("normalize", C.gt_normalize(t.handle("normalize"), C.double(p), C.int64_t(dim), C.double(eps), &out))
	keep(t)
	return wrap(out)
}

// TopK returns the k largest (or smallest) values along dim, sorted, and their indices.
func (t *Tensor) TopK(k, dim int64, largest bool) (values, indices *Tensor) {
	var v, i C.gt_tensor
	must("topk", C.gt_topk(t.handle("topk"), C.int64_t(k), C.int64_t(dim), cbool(largest), &v, &i))
	keep(t)
	return wrap(v), wrap(i)
}

// Attention computes softmax(q k^T / sqrt(Dh) + mask) v over [B, H, T, Dh] inputs. mask
// (additive float, or a bool mask that is true where attention is allowed) may be nil.
// fused selects libtorch's scaled_dot_product_attention (flash / memory-efficient kernels),
// except with both a mask and causal, which it cannot take together; otherwise the same
// computation is spelled out.
func Attention(q, k, v, mask *Tensor, causal bool, dropout float64, fused bool) *Tensor {
	var out C.gt_tensor
	must("attention", C.gt_attention(q.handle("attention"), k.handle("attention"), v.handle("attention"),
		optHandle(mask, "attention"), cbool(causal), C.double(dropout), cbool(fused), &out))
	keep(q, k, v, mask)
	return wrap(out)
}

// In-place updates, always outside autograd (for initialisation, optimizers, clamping).

func (t *Tensor) inplace(op C.int, name string, b *Tensor, s0, s1 float64) {
	must(name, C.gt_inplace(op, t.handle(name), optHandle(b, name), C.double(s0), C.double(s1)))
	keep(t, b)
}

// CopyFrom copies src's values into t (broadcasting, converting dtype and device).
func (t *Tensor) CopyFrom(src *Tensor) { t.inplace(C.GT_COPY_, "copy_", src, 0, 0) }

// AddInPlace adds alpha * b to t.
func (t *Tensor) AddInPlace(b *Tensor, alpha float64) { t.inplace(C.GT_ADD_, "add_", b, alpha, 0) }

// MulScalarInPlace multiplies t by s.
func (t *Tensor) MulScalarInPlace(s float64) { t.inplace(C.GT_MUL_, "mul_", nil, s, 0) }

// Fill sets every element to v.
func (t *Tensor) Fill(v float64) { t.inplace(C.GT_FILL_, "fill_", nil, v, 0) }

// Zero sets every element to zero.
func (t *Tensor) Zero() { t.inplace(C.GT_ZERO_, "zero_", nil, 0, 0) }

// ClampMaxInPlace limits t to at most s; ClampMinInPlace to at least s.
func (t *Tensor) ClampMaxInPlace(s float64) { t.inplace(C.GT_CLAMP_MAX_, "clamp_max_", nil, s, 0) }
func (t *Tensor) ClampMinInPlace(s float64) { t.inplace(C.GT_CLAMP_MIN_, "clamp_min_", nil, s, 0) }

// NormalInPlace fills t from N(mean, std²) with the default generator.
func (t *Tensor) NormalInPlace(mean, std float64) { t.inplace(C.GT_NORMAL_, "normal_", nil, mean, std) }

// UniformInPlace fills t from U[lo, hi) with the default generator.
func (t *Tensor) UniformInPlace(lo, hi float64) { t.inplace(C.GT_UNIFORM_, "uniform_", nil, lo, hi) }

// Equal reports whether t and o have the same shape and exactly the same values.
func (t *Tensor) Equal(o *Tensor) bool {
	var v C.int
	must("equal", C.gt_equal(t.handle("equal"), o.handle("equal"), &v))
	keep(t, o)
	return v != 0
}
