// autograd.cc: requires_grad, gradients, backward, detach and grad mode.
#include "common.h"

using namespace goclip;

extern "C" {

gt_status gt_set_requires_grad(gt_tensor t, int on) { GT_TRY(T(t).requires_grad_(on != 0)); }

gt_status gt_grad(gt_tensor t, gt_tensor *out) {
  GT_TRY({
    const auto &g = T(t).grad();
    *out = g.defined() ? own(g) : nullptr;
  });
}

gt_status gt_set_grad(gt_tensor t, gt_tensor grad) {
  GT_TRY({
    if (grad == nullptr)
      T(t).mutable_grad().reset();
    else
      T(t).mutable_grad() = T(grad);
  });
}

gt_status gt_backward(gt_tensor t, gt_tensor grad, int retain_graph) {
  GT_TRY({
    at::Tensor g;
    if (grad != nullptr) g = T(grad);
    T(t).backward(g, retain_graph != 0);
  });
}

gt_status gt_detach(gt_tensor t, gt_tensor *out) { GT_TRY(*out = own(T(t).detach())); }
gt_status gt_grad_enabled(int *out) { GT_TRY(*out = at::GradMode::is_enabled() ? 1 : 0); }
gt_status gt_set_grad_enabled(int on) { GT_TRY(at::GradMode::set_enabled(on != 0)); }

}  // extern "C"
