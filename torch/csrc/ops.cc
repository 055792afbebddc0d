// ops.cc: tensor operations, forward and (through libtorch's autograd) backward.
#include "common.h"

using namespace goclip;

namespace {

at::Tensor quick_gelu(const at::Tensor &x) { return x * at::sigmoid(x * 1.702); }

at::Tensor unary(int op, const at::Tensor &a) {
  switch (op) {
    case GT_NEG: return at::neg(a);
    case GT_EXP: return at::exp(a);
    case GT_LOG: return at::log(a);
    case GT_SQRT: return at::sqrt(a);
    case GT_RSQRT: return at::rsqrt(a);
    case GT_ABS: return at::abs(a);
    case GT_TANH: return at::tanh(a);
    case GT_SIGMOID: return at::sigmoid(a);
    case GT_RELU: return at::relu(a);
    case GT_GELU: return at::gelu(a);
    case GT_GELU_TANH: return at::gelu(a, "tanh");
    case GT_QUICK_GELU: return quick_gelu(a);
    case GT_SIN: return at::sin(a);
    case GT_COS: return at::cos(a);
    case GT_ISFINITE: return at::isfinite(a);
    case GT_LOGICAL_NOT: return at::logical_not(a);
    case GT_FLOOR: return at::floor(a);
    case GT_SQUARE: return at::square(a);
    case GT_CONTIGUOUS: return a.contiguous();
    case GT_SIGN: return at::sign(a);
    case GT_ROUND: return at::round(a);
  }
  throw std::invalid_argument("unknown unary op " + std::to_string(op));
}

at::Tensor binary(int op, const at::Tensor &a, const at::Tensor &b) {
  switch (op) {
    case GT_ADD: return at::add(a, b);
    case GT_SUB: return at::sub(a, b);
    case GT_MUL: return at::mul(a, b);
    case GT_DIV: return at::div(a, b);
    case GT_MATMUL: return at::matmul(a, b);
    case GT_POW: return at::pow(a, b);
    case GT_MAXIMUM: return at::maximum(a, b);
    case GT_MINIMUM: return at::minimum(a, b);
    case GT_EQ: return at::eq(a, b);
    case GT_NE: return at::ne(a, b);
    case GT_LT: return at::lt(a, b);
    case GT_LE: return at::le(a, b);
    case GT_GT: return at::gt(a, b);
    case GT_GE: return at::ge(a, b);
    case GT_LOGICAL_AND: return at::logical_and(a, b);
    case GT_LOGICAL_OR: return at::logical_or(a, b);
  }
  throw std::invalid_argument("unknown binary op " + std::to_string(op));
}

at::Tensor binary_scalar(int op, const at::Tensor &a, double s) {
  switch (op) {
    case GT_ADD: return at::add(a, s);
    case GT_SUB: return at::sub(a, s);
    case GT_MUL: return at::mul(a, s);
    case GT_DIV: return at::div(a, s);
    case GT_POW: return at::pow(a, s);
    case GT_EQ: return at::eq(a, s);
    case GT_NE: return at::ne(a, s);
    case GT_LT: return at::lt(a, s);
    case GT_LE: return at::le(a, s);
    case GT_GT: return at::gt(a, s);
    case GT_GE: return at::ge(a, s);
    case GT_RSUB: return at::rsub(a, s);
    case GT_CLAMP_MIN: return at::clamp_min(a, s);
    case GT_CLAMP_MAX: return at::clamp_max(a, s);
  }
  throw std::invalid_argument("unknown scalar op " + std::to_string(op));
}

int64_t one_dim(const int64_t *d, int n, const char *name) {
  if (n != 1) throw std::invalid_argument(std::string(name) + " takes exactly one dim");
  return d[0];
}

at::Tensor reduce(int op, const at::Tensor &a, const int64_t *d, int n, bool keep) {
  at::IntArrayRef ds(d, n);
  switch (op) {
    case GT_SUM: return n == 0 ? (keep ? a.sum(at::IntArrayRef{}, true) : a.sum()) : a.sum(ds, keep);
    case GT_MEAN: return n == 0 ? a.mean() : a.mean(ds, keep);
    case GT_AMAX: return at::amax(a, ds, keep);
    case GT_AMIN: return at::amin(a, ds, keep);
    case GT_LOGSUMEXP: return at::logsumexp(a, ds, keep);
    case GT_VAR: return n == 0 ? a.var() : a.var(ds, /*unbiased=*/true, keep);
    case GT_STD: return n == 0 ? a.std() : a.std(ds, /*unbiased=*/true, keep);
    case GT_ALL:
      return n == 0 ? a.all() : a.all(one_dim(d, n, "all"), keep);
    case GT_ANY:
      return n == 0 ? a.any() : a.any(one_dim(d, n, "any"), keep);
    case GT_ARGMAX:
      return n == 0 ? a.argmax() : a.argmax(one_dim(d, n, "argmax"), keep);
    case GT_ARGMIN:
      return n == 0 ? a.argmin() : a.argmin(one_dim(d, n, "argmin"), keep);
    case GT_PROD:
      return n == 0 ? a.prod() : a.prod(one_dim(d, n, "prod"), keep);
  }
  throw std::invalid_argument("unknown reduction " + std::to_string(op));
}

// Attention spelled out: softmax(q k^T / sqrt(d) + mask) v, with an optional causal mask.
at::Tensor attention_math(const at::Tensor &q, const at::Tensor &k, const at::Tensor &v,
                          const c10::optional<at::Tensor> &mask, bool causal, double p,
                          bool train) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  auto scores = at::matmul(q * scale, k.transpose(-2, -1));  // [B, H, Tq, Tk]
  if (causal) {
    auto keep = at::ones({q.size(-2), k.size(-2)}, q.options().dtype(at::kBool)).tril();
    scores = scores.masked_fill(keep.logical_not(), -std::numeric_limits<float>::infinity());
  }
  if (mask.has_value()) {
    if (mask->scalar_type() == at::kBool)
      scores = scores.masked_fill(mask->logical_not(), -std::numeric_limits<float>::infinity());
    else
      scores = scores + *mask;
  }
  auto probs = at::softmax(scores, -1);
  if (p > 0) probs = at::dropout(probs, p, train);
  return at::matmul(probs, v);  // [B, H, Tq, Dh]
}

}  // namespace

extern "C" {

gt_status gt_unary(int op, gt_tensor a, gt_tensor *out) { GT_TRY(*out = own(unary(op, T(a)))); }

gt_status gt_binary(int op, gt_tensor a, gt_tensor b, gt_tensor *out) {
  GT_TRY(*out = own(binary(op, T(a), T(b))));
}

gt_status gt_binary_scalar(int op, gt_tensor a, double b, gt_tensor *out) {
  GT_TRY(*out = own(binary_scalar(op, T(a), b)));
}

gt_status gt_reduce(int op, gt_tensor a, const int64_t *d, int n, int keepdim, gt_tensor *out) {
  GT_TRY(*out = own(reduce(op, T(a), d, n, keepdim != 0)));
}

gt_status gt_reshape(gt_tensor a, const int64_t *shape, int ndim, gt_tensor *out) {
  GT_TRY(*out = own(T(a).reshape(dims(shape, ndim))));
}
gt_status gt_view(gt_tensor a, const int64_t *shape, int ndim, gt_tensor *out) {
  GT_TRY(*out = own(T(a).view(dims(shape, ndim))));
}
gt_status gt_expand(gt_tensor a, const int64_t *shape, int ndim, gt_tensor *out) {
  GT_TRY(*out = own(T(a).expand(dims(shape, ndim))));
}
gt_status gt_permute(gt_tensor a, const int64_t *d, int ndim, gt_tensor *out) {
  GT_TRY(*out = own(T(a).permute(dims(d, ndim))));
}
gt_status gt_transpose(gt_tensor a, int64_t d0, int64_t d1, gt_tensor *out) {
  GT_TRY(*out = own(T(a).transpose(d0, d1)));
}
gt_status gt_unsqueeze(gt_tensor a, int64_t dim, gt_tensor *out) {
  GT_TRY(*out = own(T(a).unsqueeze(dim)));
}
gt_status gt_squeeze(gt_tensor a, int64_t dim, gt_tensor *out) {
  GT_TRY(*out = own(T(a).squeeze(dim)));
}
gt_status gt_flatten(gt_tensor a, int64_t start, int64_t end, gt_tensor *out) {
  GT_TRY(*out = own(T(a).flatten(start, end)));
}
gt_status gt_narrow(gt_tensor a, int64_t dim, int64_t start, int64_t length, gt_tensor *out) {
  GT_TRY(*out = own(T(a).narrow(dim, start, length)));
}
gt_status gt_select(gt_tensor a, int64_t dim, int64_t index, gt_tensor *out) {
  GT_TRY(*out = own(T(a).select(dim, index)));
}
gt_status gt_index_select(gt_tensor a, int64_t dim, gt_tensor index, gt_tensor *out) {
  GT_TRY(*out = own(T(a).index_select(dim, T(index))));
}
gt_status gt_gather(gt_tensor a, int64_t dim, gt_tensor index, gt_tensor *out) {
  GT_TRY(*out = own(T(a).gather(dim, T(index))));
}

gt_status gt_cat(const gt_tensor *ts, int n, int64_t dim, int kind, gt_tensor *out) {
  GT_TRY({
    std::vector<at::Tensor> v;
    v.reserve(n);
    for (int i = 0; i < n; i++) v.push_back(T(ts[i]));
    *out = own(kind == 0 ? at::cat(v, dim) : at::stack(v, dim));
  });
}

gt_status gt_where(gt_tensor cond, gt_tensor a, gt_tensor b, gt_tensor *out) {
  GT_TRY(*out = own(at::where(T(cond), T(a), T(b))));
}
gt_status gt_masked_fill(gt_tensor a, gt_tensor mask, double value, gt_tensor *out) {
  GT_TRY(*out = own(T(a).masked_fill(T(mask), value)));
}
gt_status gt_tri(gt_tensor a, int64_t diagonal, int kind, gt_tensor *out) {
  GT_TRY(*out = own(kind == 0 ? at::triu(T(a), diagonal) : at::tril(T(a), diagonal)));
}
gt_status gt_clamp(gt_tensor a, double lo, double hi, gt_tensor *out) {
  GT_TRY(*out = own(at::clamp(T(a), lo, hi)));
}

gt_status gt_linear(gt_tensor x, gt_tensor w, gt_tensor b, gt_tensor *out) {
  GT_TRY({
    c10::optional<at::Tensor> bias;
    if (b != nullptr) bias = T(b);
    *out = own(at::linear(T(x), T(w), bias));
  });
}

gt_status gt_layer_norm(gt_tensor x, const int64_t *shape, int ndim, gt_tensor w, gt_tensor b,
                        double eps, gt_tensor *out) {
  GT_TRY({
    c10::optional<at::Tensor> weight, bias;
    if (w != nullptr) weight = T(w);
    if (b != nullptr) bias = T(b);
    *out = own(at::layer_norm(T(x), dims(shape, ndim), weight, bias, eps));
  });
}

gt_status gt_softmax(gt_tensor x, int64_t dim, int kind, gt_tensor *out) {
  GT_TRY(*out = own(kind == 0 ? at::softmax(T(x), dim) : at::log_softmax(T(x), dim)));
}

gt_status gt_cross_entropy(gt_tensor logits, gt_tensor target, gt_tensor *out) {
  GT_TRY(*out = own(at::cross_entropy_loss(T(logits), T(target))));
}

gt_status gt_conv2d(gt_tensor x, gt_tensor w, gt_tensor b, int64_t stride, int64_t padding,
                    gt_tensor *out) {
  GT_TRY({
    c10::optional<at::Tensor> bias;
    if (b != nullptr) bias = T(b);
    *out = own(at::conv2d(T(x), T(w), bias, {stride, stride}, {padding, padding}));
  });
}

gt_status gt_embedding(gt_tensor weight, gt_tensor indices, gt_tensor *out) {
  GT_TRY(*out = own(at::embedding(T(weight), T(indices))));
}

gt_status gt_dropout(gt_tensor x, double p, int train, gt_tensor *out) {
  GT_TRY(*out = own(at::dropout(T(x), p, train != 0)));
}

gt_status gt_norm(gt_tensor x, double p, const int64_t *d, int n, int keepdim, gt_tensor *out) {
  GT_TRY({
    if (n == 0)
      *out = own(at::norm(T(x), p));
    else
      *out = own(at::norm(T(x), p, at::IntArrayRef(d, n), keepdim != 0));
  });
}

gt_status gt_normalize(gt_tensor x, double p, int64_t dim, double eps, gt_tensor *out) {
  GT_TRY({
    auto &t = T(x);
    auto n = at::norm(t, p, {dim}, /*keepdim=*/true).clamp_min(eps);
    *out = own(t / n);
  });
}

gt_status gt_topk(gt_tensor x, int64_t k, int64_t dim, int largest, gt_tensor *values,
                  gt_tensor *indices) {
  GT_TRY({
    auto r = at::topk(T(x), k, dim, largest != 0, /*sorted=*/true);
    *values = own(std::get<0>(r));
    *indices = own(std::get<1>(r));
  });
}

gt_status gt_attention(gt_tensor q, gt_tensor k, gt_tensor v, gt_tensor mask, int is_causal,
                       double dropout_p, int use_fused, gt_tensor *out) {
  GT_TRY({
    c10::optional<at::Tensor> m;
    if (mask != nullptr) m = T(mask);
    if (use_fused && !(m.has_value() && is_causal)) {
      *out = own(at::scaled_dot_product_attention(T(q), T(k), T(v), m, dropout_p,
                                                  is_causal != 0));
      return nullptr;
    }
    *out = own(attention_math(T(q), T(k), T(v), m, is_causal != 0, dropout_p, dropout_p > 0));
  });
}

gt_status gt_inplace(int op, gt_tensor a, gt_tensor b, double s0, double s1) {
  GT_TRY({
    at::NoGradGuard no_grad;
    auto &x = T(a);
    switch (op) {
      case GT_COPY_: x.copy_(T(b)); break;
      case GT_ADD_:
        if (b != nullptr) x.add_(T(b), s0); else x.add_(s0);
        break;
      case GT_MUL_:
        if (b != nullptr) x.mul_(T(b)); else x.mul_(s0);
        break;
      case GT_FILL_: x.fill_(s0); break;
      case GT_ZERO_: x.zero_(); break;
      case GT_CLAMP_MAX_: x.clamp_max_(s0); break;
      case GT_CLAMP_MIN_: x.clamp_min_(s0); break;
      case GT_NORMAL_: x.normal_(s0, s1); break;
      case GT_UNIFORM_: x.uniform_(s0, s1); break;
      default: throw std::invalid_argument("unknown in-place op " + std::to_string(op));
    }
  });
}

gt_status gt_equal(gt_tensor a, gt_tensor b, int *out) { GT_TRY(*out = at::equal(T(a), T(b))); }

}  // extern "C"
