// distributed.cc: c10d process groups (TCPStore rendezvous, Gloo, NCCL where this libtorch
// has it), the collectives data-parallel training needs, and all_gather with gradients.
//
// In libtorch 2.x the collectives live on c10d::Backend (ProcessGroupGloo and
// ProcessGroupNCCL derive from it; a ProcessGroup dispatches to one), so the shim holds the
// backend object itself.
//
// Gloo needs its own headers (Debian: libgloo-dev); NCCL needs nccl.h and a CUDA libtorch
// (CMake defines GOCLIP_WITH_NCCL then). A backend left out of the build is an error when
// asked for, not a build failure.
#include "common.h"

#include <chrono>
#include <sstream>

#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#include <torch/csrc/distributed/c10d/Backend.hpp>
// Gloo is on wherever its headers are on the include path (so `make check-torch2`
// compiles this path too); the c10d headers want USE_C10D_* as libtorch's build had it.
#if !defined(GOCLIP_WITH_GLOO) && defined(__has_include)
#if __has_include(<gloo/algorithm.h>)
#define GOCLIP_WITH_GLOO 1
#endif
#endif
#ifdef GOCLIP_WITH_GLOO
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef GOCLIP_WITH_NCCL
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

using namespace goclip;

namespace {

using Group = c10d::Backend;

// PG is one process group: its rendezvous store and its backend. It is reference counted
// so that an autograd graph that still holds a gather-with-grad node keeps it alive.
struct PG : torch::CustomClassHolder {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<Group> group;
  int backend = GT_GLOO;
  int rank = 0;
  int world = 1;
  std::chrono::milliseconds timeout{0};

  std::string where(const char *op) const {
    std::ostringstream s;
    s << op << " (rank " << rank << " of " << world << ", "
      << (backend == GT_NCCL ? "nccl" : "gloo") << ", timeout " << timeout.count() << " ms)";
    return s.str();
  }
};

using PGPtr = c10::intrusive_ptr<PG>;

PGPtr &P(gt_pg h) {
  if (h == nullptr) throw std::invalid_argument("nil process group handle");
  auto &p = *static_cast<PGPtr *>(h);
  if (!p) throw std::invalid_argument("use of a closed process group");
  return p;
}

// run calls f and rethrows any failure with the operation, rank and backend in front, so
// that a Go error says where a collective failed ("all_reduce (rank 0 of 2, gloo): ...").
template <typename F>
auto run(const PG &pg, const char *op, F f) -> decltype(f()) {
  try {
    return f();
  } catch (const c10::Error &e) {
    throw std::runtime_error(pg.where(op) + ": " + clean(e.what_without_backtrace()));
  } catch (const std::exception &e) {
    throw std::runtime_error(pg.where(op) + ": " + clean(e.what()));
  }
}

// wait blocks until the work is done. Gloo works run on the host: wait with the group's
// timeout, so a hung peer ends in an error. NCCL works are ordered on the current CUDA
// stream; their timeout is the group's watchdog (set from the same value).
void wait(const PG &pg, const c10::intrusive_ptr<c10d::Work> &w) {
  if (pg.backend == GT_GLOO) {
    if (!w->wait(pg.timeout)) throw std::runtime_error("timed out");
  } else {
    w->wait();
  }
}

c10d::ReduceOp reduce_op(int op) {
  switch (op) {
    case GT_REDUCE_SUM:
    case GT_REDUCE_AVG:
      return c10d::ReduceOp::SUM;
    case GT_REDUCE_MAX:
      return c10d::ReduceOp::MAX;
    case GT_REDUCE_MIN:
      return c10d::ReduceOp::MIN;
  }
  throw std::invalid_argument("unknown reduce op " + std::to_string(op));
}

// all_reduce_one reduces one contiguous tensor in place on every rank.
void all_reduce_one(const PG &pg, at::Tensor &t, int op) {
  std::vector<at::Tensor> ts{t};
  c10d::AllreduceOptions opts;
  opts.reduceOp = reduce_op(op);
  opts.timeout = pg.timeout;
  wait(pg, pg.group->allreduce(ts, opts));
  if (op == GT_REDUCE_AVG) t.div_(pg.world);
}

// all_gather_rows gathers x [b_r, ...] from every rank into [sum_r b_r, ...] in rank
// order. The row counts may differ by rank (first gathered themselves); the other sizes
// must agree. Writes the row offset of every rank (world + 1 entries) to offsets.
at::Tensor all_gather_rows(const PG &pg, const at::Tensor &x, std::vector<int64_t> *offsets) {
  at::NoGradGuard no_grad;
  TORCH_CHECK(x.dim() >= 1, "all_gather needs a tensor with at least one dimension");
  c10d::AllgatherOptions opts;
  opts.timeout = pg.timeout;

  // 1. Every rank's row count.
  auto rows = at::full({1}, x.size(0), x.options().dtype(at::kLong));
  std::vector<at::Tensor> rows_in{rows};
  std::vector<std::vector<at::Tensor>> rows_out(1);
  for (int r = 0; r < pg.world; r++) rows_out[0].push_back(at::empty_like(rows));
  wait(pg, pg.group->allgather(rows_out, rows_in, opts));
  std::vector<int64_t> off(pg.world + 1, 0);
  int64_t most = 0;
  for (int r = 0; r < pg.world; r++) {
    int64_t n = rows_out[0][r].item<int64_t>();
    off[r + 1] = off[r] + n;
    most = std::max(most, n);
  }

  // 2. The rows, padded to the largest count (all_gather moves equal shapes).
  auto in = x.contiguous();
  if (in.size(0) < most) {
    auto shape = in.sizes().vec();
    shape[0] = most - in.size(0);
    in = at::cat({in, at::zeros(shape, in.options())}, 0);
  }
  std::vector<at::Tensor> data_in{in};
  std::vector<std::vector<at::Tensor>> data_out(1);
  for (int r = 0; r < pg.world; r++) data_out[0].push_back(at::empty_like(in));
  wait(pg, pg.group->allgather(data_out, data_in, opts));
  std::vector<at::Tensor> parts;
  for (int r = 0; r < pg.world; r++) parts.push_back(data_out[0][r].narrow(0, 0, off[r + 1] - off[r]));
  if (offsets != nullptr) *offsets = off;
  return at::cat(parts, 0);
}

// GatherWithGrad: forward gathers [b_r, D] from every rank into [N, D]; backward sums the
// incoming gradient [N, D] over ranks (every rank's loss depends on every rank's rows)
// and returns this rank's rows. This is open_clip's gather_with_grad.
struct GatherWithGrad : public torch::autograd::Function<GatherWithGrad> {
  static at::Tensor forward(torch::autograd::AutogradContext *ctx, const at::Tensor &x,
                            PGPtr pg) {
    std::vector<int64_t> off;
    auto out = run(*pg, "gather_with_grad", [&] { return all_gather_rows(*pg, x, &off); });
    ctx->saved_data["pg"] = c10::IValue::make_capsule(pg);
    ctx->saved_data["start"] = off[pg->rank];
    ctx->saved_data["rows"] = off[pg->rank + 1] - off[pg->rank];
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext *ctx,
                                                 torch::autograd::variable_list grads) {
    auto pg = c10::static_intrusive_pointer_cast<PG>(ctx->saved_data["pg"].toCapsule());
    int64_t start = ctx->saved_data["start"].toInt();
    int64_t rows = ctx->saved_data["rows"].toInt();
    at::Tensor g = grads[0].contiguous().clone();  // reduced in place: never the caller's
    run(*pg, "gather_with_grad backward", [&] {
      at::NoGradGuard no_grad;
      all_reduce_one(*pg, g, GT_REDUCE_SUM);
    });
    return {g.narrow(0, start, rows), at::Tensor()};
  }
};

bool loopback(const std::string &addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
}

c10::intrusive_ptr<Group> make_group(const PGPtr &pg, const std::string &addr) {
  if (pg->backend == GT_GLOO) {
#ifdef GOCLIP_WITH_GLOO
    auto opts = c10d::ProcessGroupGloo::Options::create(pg->timeout);
    // The interface Gloo listens on: GLOO_SOCKET_IFNAME as in PyTorch, else loopback
    // for a local run, else the address this host's name resolves to.
    const char *ifname = std::getenv("GLOO_SOCKET_IFNAME");
    if (ifname != nullptr && *ifname != '\0')
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    else if (loopback(addr))
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    else
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    return c10::make_intrusive<c10d::ProcessGroupGloo>(pg->store, pg->rank, pg->world, opts);
#else
    (void)addr;
    throw std::runtime_error("this goclip shim was built without Gloo (install its headers, "
                             "e.g. Debian's libgloo-dev, and rebuild the shim)");
#endif
  }
  if (pg->backend == GT_NCCL) {
#ifdef GOCLIP_WITH_NCCL
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = pg->timeout;
    return c10::make_intrusive<c10d::ProcessGroupNCCL>(pg->store, pg->rank, pg->world, opts);
#else
    throw std::runtime_error("this goclip shim was built without NCCL (it needs a CUDA "
                             "libtorch with c10d NCCL and nccl.h)");
#endif
  }
  throw std::invalid_argument("unknown backend " + std::to_string(pg->backend));
}

}  // namespace

extern "C" {

int gt_dist_has_backend(int backend) {
  switch (backend) {
#ifdef GOCLIP_WITH_GLOO
    case GT_GLOO:
      return 1;
#endif
#ifdef GOCLIP_WITH_NCCL
    case GT_NCCL:
      return 1;
#endif
    default:
      return 0;
  }
}

gt_status gt_pg_new(int backend, int rank, int world, const char *addr, int port,
                    int64_t timeout_ms, gt_pg *out) {
  GT_TRY({
    *out = nullptr;
    if (world < 1 || rank < 0 || rank >= world)
      throw std::invalid_argument("rank " + std::to_string(rank) + " is not in a world of " +
                                  std::to_string(world));
    if (port <= 0 || port > 65535)
      throw std::invalid_argument("master port " + std::to_string(port) + " out of range");
    if (timeout_ms <= 0) throw std::invalid_argument("timeout must be positive");
    auto pg = c10::make_intrusive<PG>();
    pg->backend = backend;
    pg->rank = rank;
    pg->world = world;
    pg->timeout = std::chrono::milliseconds(timeout_ms);
    std::string host(addr);
    run(*pg, "rendezvous", [&] {
      c10d::TCPStoreOptions so;
      so.port = static_cast<std::uint16_t>(port);
      so.isServer = rank == 0;
      so.numWorkers = static_cast<std::size_t>(world);
      so.waitWorkers = true;
      so.timeout = pg->timeout;
      pg->store = c10::make_intrusive<c10d::TCPStore>(host, so);
      pg->group = make_group(pg, host);
    });
    *out = new PGPtr(std::move(pg));
  });
}

void gt_pg_free(gt_pg pg) { delete static_cast<PGPtr *>(pg); }

gt_status gt_pg_all_reduce(gt_pg h, const gt_tensor *ts, int n, int op) {
  GT_TRY({
    const auto &pg = P(h);
    run(*pg, "all_reduce", [&] {
      at::NoGradGuard no_grad;
      reduce_op(op);
      // Tensors are reduced in runs of one dtype and device: a lone contiguous tensor in
      // place, several through one flat buffer (cat, reduce, copy back).
      int i = 0;
      while (i < n) {
        auto &first = T(ts[i]);
        int j = i + 1;
        while (j < n && T(ts[j]).scalar_type() == first.scalar_type() &&
               T(ts[j]).device() == first.device())
          j++;
        if (j - i == 1 && first.is_contiguous()) {
          all_reduce_one(*pg, first, op);
        } else {
          std::vector<at::Tensor> flat;
          for (int k = i; k < j; k++) flat.push_back(T(ts[k]).reshape({-1}));
          auto buf = at::cat(flat, 0);
          all_reduce_one(*pg, buf, op);
          int64_t off = 0;
          for (int k = i; k < j; k++) {
            auto &t = T(ts[k]);
            t.copy_(buf.narrow(0, off, t.numel()).view(t.sizes()));
            off += t.numel();
          }
        }
        i = j;
      }
    });
  });
}

gt_status gt_pg_all_gather(gt_pg h, gt_tensor t, gt_tensor *out) {
  GT_TRY({
    const auto &pg = P(h);
    *out = own(run(*pg, "all_gather", [&] { return all_gather_rows(*pg, T(t), nullptr); }));
  });
}

gt_status gt_pg_gather_with_grad(gt_pg h, gt_tensor t, gt_tensor *out) {
  GT_TRY({
    const auto &pg = P(h);
    *out = own(GatherWithGrad::apply(T(t), pg));
  });
}

gt_status gt_pg_broadcast(gt_pg h, gt_tensor t, int root) {
  GT_TRY({
    const auto &pg = P(h);
    run(*pg, "broadcast", [&] {
      at::NoGradGuard no_grad;
      if (root < 0 || root >= pg->world)
        throw std::invalid_argument("root " + std::to_string(root) + " out of range");
      auto &dst = T(t);
      auto buf = dst.is_contiguous() ? dst : dst.contiguous();
      std::vector<at::Tensor> ts{buf};
      c10d::BroadcastOptions opts;
      opts.rootRank = root;
      opts.timeout = pg->timeout;
      wait(*pg, pg->group->broadcast(ts, opts));
      if (!buf.is_same(dst)) dst.copy_(buf);
    });
  });
}

gt_status gt_pg_barrier(gt_pg h) {
  GT_TRY({
    const auto &pg = P(h);
    run(*pg, "barrier", [&] {
      c10d::BarrierOptions opts;
      opts.timeout = pg->timeout;
      wait(*pg, pg->group->barrier(opts));
    });
  });
}

}  // extern "C"
