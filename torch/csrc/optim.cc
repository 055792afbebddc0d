// optim.cc: AdamW, gradient clipping and the loss-scaling primitives.
#include "common.h"

using namespace goclip;

namespace {

std::vector<at::Tensor> tensors(const gt_tensor *hs, int n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (int i = 0; i < n; i++) v.push_back(T(hs[i]));
  return v;
}

// torch.optim.AdamW's single-tensor update, written with in-place ATen ops.
void adamw_one(at::Tensor &p, const at::Tensor &g, at::Tensor &m, at::Tensor &v, double lr,
               double beta1, double beta2, double eps, double wd, int64_t step) {
  p.mul_(1.0 - lr * wd);
  m.lerp_(g, 1.0 - beta1);
  v.mul_(beta2).addcmul_(g, g, 1.0 - beta2);
  const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  auto denom = v.sqrt().div_(std::sqrt(bc2)).add_(eps);  // one temporary, not two
  p.addcdiv_(m, denom, -lr / bc1);
}

}  // namespace

extern "C" {

gt_status gt_adamw_step(const gt_tensor *params, const gt_tensor *exp_avg,
                        const gt_tensor *exp_avg_sq, int n, double lr, double beta1,
                        double beta2, double eps, double weight_decay, gt_tensor step,
                        gt_tensor found_inf, int fused) {
  GT_TRY({
    at::NoGradGuard no_grad;
    const at::Tensor &steps = T(step);
    std::optional<at::Tensor> found;
    if (found_inf) found = T(found_inf);
    std::vector<at::Tensor> ps, gs, ms, vs;
    for (int i = 0; i < n; i++) {
      auto &p = T(params[i]);
      if (!p.grad().defined()) continue;
      auto &m = T(exp_avg[i]);
      auto &v = T(exp_avg_sq[i]);
      if (m.sizes() != p.sizes() || v.sizes() != p.sizes())
        throw std::invalid_argument("adamw: state shape differs from parameter " +
                                    std::to_string(i));
      ps.push_back(p);
      gs.push_back(p.grad());
      ms.push_back(m);
      vs.push_back(v);
    }
    if (ps.empty()) return nullptr;
    if (steps.numel() != 1 || steps.device() != ps[0].device())
      throw std::invalid_argument("adamw: the step counter must be one value on the parameters' device");
    if (found && (found->numel() != 1 || found->device() != ps[0].device()))
      throw std::invalid_argument("adamw: found_inf must be one value on the parameters' device");
    if (fused && ps[0].is_cuda()) {
      // The kernel reads the step and found_inf on the device: it leaves every tensor as
      // it was when found_inf is non-zero, and the host never waits.
      auto steps_f = steps.to(at::kFloat);
      std::vector<at::Tensor> step_list(ps.size(), steps_f);
      at::_fused_adamw_(ps, gs, ms, vs, {}, step_list, lr, beta1, beta2, weight_decay, eps,
                        /*amsgrad=*/false, /*maximize=*/false, /*grad_scale=*/std::nullopt,
                        found);
      return nullptr;
    }
    // adamw_one's bias correction is computed on the host: reading the step (and
    // found_inf) is free for CPU tensors and a device synchronisation on CUDA (the
    // non-fused CUDA path only).
    if (found && found->item<double>() != 0) return nullptr;
    const auto t = static_cast<int64_t>(steps.item<double>());
    if (t < 1) throw std::invalid_argument("adamw: step must be >= 1");
    for (size_t i = 0; i < ps.size(); i++)
      adamw_one(ps[i], gs[i], ms[i], vs[i], lr, beta1, beta2, eps, weight_decay, t);
  });
}

gt_status gt_clip_grad_norm(const gt_tensor *params, int n, double max_norm,
                            gt_tensor *total_norm) {
  GT_TRY({
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> norms, grads;
    for (auto &p : tensors(params, n)) {
      if (!p.grad().defined()) continue;
      grads.push_back(p.grad());
      norms.push_back(at::norm(p.grad().to(at::kFloat), 2));
    }
    if (norms.empty()) {
      *total_norm = own(at::zeros({}, at::kFloat));
      return nullptr;
    }
    auto total = at::norm(at::stack(norms), 2);  // []
    if (max_norm > 0) {
      auto coef = (max_norm / (total + 1e-6)).clamp_max(1.0);
      for (auto &g : grads) g.mul_(coef.to(g.device(), g.scalar_type()));
    }
    *total_norm = own(total);
  });
}

gt_status gt_unscale_grads(const gt_tensor *params, int n, gt_tensor inv_scale,
                           gt_tensor *found_inf) {
  GT_TRY({
    at::NoGradGuard no_grad;
    const at::Tensor &inv = T(inv_scale);
    at::Tensor found;
    for (auto &p : tensors(params, n)) {
      if (!p.grad().defined()) continue;
      auto g = p.grad();
      auto bad = at::logical_not(at::isfinite(g)).any().to(at::kFloat);
      found = found.defined() ? at::maximum(found, bad.to(found.device())) : bad;
      g.mul_(inv.to(g.device(), at::kFloat));
    }
    *found_inf = own(found.defined() ? found : at::zeros({}, inv.options().dtype(at::kFloat)));
  });
}

}  // extern "C"
