// Convolutions on oneDNN's own convolution kernels, called directly: the "onednn" convolution path of
// common/conv.py (common/cpu_kernels.py compiles this file against the libdnnl.so.3 that MindSpore ships).
//
// Why: MindSpore 2.10's CPU Conv2D hands oneDNN plain NCHW tensors; capped at AVX2 oneDNN runs them as im2col +
// an AVX2 GEMM, and at AVX-512 it finds only a reference kernel. Asked here for the layouts it prefers
// (format "any"), the same library runs its jit AVX-512 direct convolutions and, for bf16 operands, its AMX
// kernels (a 5x256x64x64 3x3 layer's forward and gradients: 313 ms native, 164 ms here, 50 ms here in bf16 on
// this project's Xeon; bench/conv_layer.py --paths native,onednn [--precision bf16]). Each call
// reorders its plain float32 operands into those layouts (and, with bf16 = 1, rounds them to bf16: the products
// are exact, sums and outputs stay float32), runs the convolution and reorders the result back.
//
// Interface (MindSpore aot, CPU): params = inputs then output; shapes[i] their shapes.
//   OnednnConv(x [B, C, H, W], w [O, C/g, kh, kw], cfg [10] int64) -> y [B, O, OH, OW]
//   OnednnConvData(dy [B, O, OH, OW], w, cfg, like [H, W] uint8) -> dx [B, C, H, W]
//   OnednnConvWeights(x, dy, w, cfg) -> dw [O, C/g, kh, kw]           (w only gives the shape)
//   OnednnConvBias(x, w, b [O], cfg) -> y; OnednnConvWeightsBias(x, dy, w, cfg) -> (dw, db [O]): the same with the
//   bias added in the convolution's output pass, and its gradient summed in the weight gradient's.
// cfg = (sh, sw, pad top, bottom, left, right, dh, dw, groups, bf16): stride, zero padding, dilation (1 = none).
// Returns 0, or 1 (unexpected operands), 2 (oneDNN has no convolution for this geometry and types), 3 (out of
// memory), 4 (a oneDNN call failed). Primitives are built once per geometry and kept; the reordered copies live
// in per-thread buffers that grow to the largest layer. oneDNN splits each call over the process's cores through
// Pool (below).
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "onednn_api.h"

namespace {

// oneDNN's parallel loops on the calling thread and (cores - 1) workers that live with the process. A worker spins
// for a while after each loop (the next loop of the same convolution follows within microseconds), then sleeps
// until the next one. A loop that finds the pool busy (another kernel's thread) runs on its caller alone.
class Pool : public dnnl::threadpool_interop::threadpool_iface {
 public:
  Pool() {
    cpu_set_t set;
    threads_ = sched_getaffinity(0, sizeof(set), &set) == 0 ? std::min(8, CPU_COUNT(&set)) : 1;
    for (int t = 1; t < threads_; ++t) std::thread([this] { Work(); }).detach();
  }
  int get_num_threads() const override { return threads_; }
  bool get_in_parallel() const override { return in_parallel_; }
  uint64_t get_flags() const override { return 0; }
  void wait() override {}
  void parallel_for(int n, const std::function<void(int, int)> &fn) override {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (in_parallel_ || !busy.owns_lock() || threads_ <= 1 || n <= 1) {
      for (int i = 0; i < n; ++i) fn(i, n);
      return;
    }
    job_ = &fn;
    n_ = n;
    next_.store(0, std::memory_order_relaxed);
    remaining_.store(threads_ - 1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(sleep_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    RunShare();
    while (remaining_.load(std::memory_order_acquire) != 0) __builtin_ia32_pause();
  }

 private:
  void RunShare() {
    in_parallel_ = true;
    for (int i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < n_;) (*job_)(i, n_);
    in_parallel_ = false;
  }
  void Work() {
    uint64_t seen = 0;
    for (;;) {
      const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
      while (generation_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < spin_until)
        __builtin_ia32_pause();
      if (generation_.load(std::memory_order_acquire) == seen) {
        std::unique_lock<std::mutex> lock(sleep_);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      }
      seen = generation_.load(std::memory_order_acquire);
      RunShare();
      remaining_.fetch_sub(1, std::memory_order_release);
    }
  }

  int threads_;
  std::mutex busy_, sleep_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> next_{0}, remaining_{0};
  const std::function<void(int, int)> *job_ = nullptr;
  int n_ = 0;
  static thread_local bool in_parallel_;
};
thread_local bool Pool::in_parallel_ = false;

dnnl_engine_t Engine() {
  static dnnl_engine_t engine = [] {
    dnnl_engine_t e = nullptr;
    return dnnl_engine_create(&e, dnnl_cpu, 0) == dnnl_success ? e : nullptr;
  }();
  return engine;
}

Pool *ThePool() {
  static Pool *pool = new Pool;  // never destroyed: its workers run until the process ends
  return pool;
}

// One per thread: a stream over ThePool and the buffers of the reordered operands.
struct ThreadState {
  dnnl_stream_t stream = nullptr;
  std::vector<void *> buffers;
  std::vector<size_t> sizes;
  ThreadState() : buffers(4, nullptr), sizes(4, 0) {
    dnnl_threadpool_interop_stream_create(&stream, Engine(), ThePool());
  }
  void *Buffer(int i, size_t bytes) {
    if (sizes[i] < bytes) {
      free(buffers[i]);
      buffers[i] = nullptr;
      if (posix_memalign(&buffers[i], 64, bytes) != 0) return nullptr;
      sizes[i] = bytes;
    }
    return buffers[i];
  }
};

ThreadState &State() {
  static thread_local ThreadState state;
  return state;
}

enum Kind { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

// An operand: its plain layout (the MindSpore tensor), the layout the convolution wants, and the reorder between.
struct Operand {
  int arg = 0;
  bool output = false;
  dnnl_memory_desc_t plain = nullptr, wanted = nullptr;
  dnnl_primitive_t reorder = nullptr;  // null when the layouts agree
};

struct Step {
  dnnl_primitive_t conv = nullptr;
  Operand operands[4];  // in the order of the custom operator's tensors (the shape-only ones left out)
  int count = 0;
};

// dims of a 4-D tensor [N, C, H, W]; a grouped weight [O, C/g, kh, kw] as oneDNN's 5-D [g, O/g, C/g, kh, kw].
int Dims(const int64_t *shape, int groups, bool weights, int64_t *dims) {
  const bool grouped = weights && groups > 1;
  if (grouped) dims[0] = groups;
  for (int i = 0; i < 4; ++i) dims[i + grouped] = shape[i];
  if (grouped) dims[1] /= groups;
  return 4 + grouped;
}

// The MindSpore tensor's layout: dense, row-major, float32.
dnnl_memory_desc_t Plain(const int64_t *shape, int groups, bool weights) {
  dnnl_dims_t dims = {0}, strides = {0};
  const int n = Dims(shape, groups, weights, dims);
  strides[n - 1] = 1;
  for (int i = n - 2; i >= 0; --i) strides[i] = strides[i + 1] * dims[i + 1];
  dnnl_memory_desc_t md = nullptr;
  dnnl_memory_desc_create_with_strides(&md, n, dims, dnnl_f32, strides);
  return md;
}

// Whatever layout oneDNN prefers, in `type`.
dnnl_memory_desc_t Any(const int64_t *shape, int groups, bool weights, int type) {
  dnnl_dims_t dims = {0};
  const int n = Dims(shape, groups, weights, dims);
  dnnl_memory_desc_t md = nullptr;
  dnnl_memory_desc_create_with_tag(&md, n, dims, type, dnnl_format_tag_any);
  return md;
}

bool Reorder(const_dnnl_memory_desc_t from, const_dnnl_memory_desc_t to, dnnl_primitive_t *reorder) {
  if (dnnl_memory_desc_equal(from, to)) return true;
  dnnl_primitive_desc_t pd = nullptr;
  if (dnnl_reorder_primitive_desc_create(&pd, from, Engine(), to, Engine(), nullptr) != dnnl_success) return false;
  const bool ok = dnnl_primitive_create(reorder, pd) == dnnl_success;
  dnnl_primitive_desc_destroy(pd);
  return ok;
}

// The primitive (and reorders) of one call's geometry, with the bias (forward) or its gradient (backward weights)
// when `bias`; nullptr when oneDNN has none.
Step *Build(Kind kind, bool bias, const int64_t *x_shape, const int64_t *w_shape, const int64_t *y_shape,
            const int64_t *cfg) {
  const int groups = static_cast<int>(cfg[8]);
  const int low = cfg[9] ? dnnl_bf16 : dnnl_f32;  // operand type of the products
  const dnnl_dims_t strides = {cfg[0], cfg[1]}, dilates = {cfg[6] - 1, cfg[7] - 1}, pad_l = {cfg[2], cfg[4]},
                    pad_r = {cfg[3], cfg[5]}, channels = {y_shape[1]}, dense = {1};
  dnnl_threadpool_interop_set_max_concurrency(ThePool()->get_num_threads());
  // The forward (the backward's hint) takes x, w in the products' type and gives y in f32; the backward passes
  // take their inputs in the products' type and give f32. The bias and its gradient: f32 [O].
  dnnl_memory_desc_t x = Any(x_shape, groups, false, low), w = Any(w_shape, groups, true, low);
  dnnl_memory_desc_t y = Any(y_shape, groups, false, dnnl_f32), dy = Any(y_shape, groups, false, low);
  dnnl_memory_desc_t dx = Any(x_shape, groups, false, dnnl_f32), dw = Any(w_shape, groups, true, dnnl_f32);
  dnnl_memory_desc_t b = nullptr;
  dnnl_memory_desc_create_with_strides(&b, 1, channels, dnnl_f32, dense);
  const_dnnl_memory_desc_t forward_bias = bias && kind == kForward ? b : nullptr;
  dnnl_primitive_desc_t hint = nullptr, pd = nullptr;
  bool ok = dnnl_convolution_forward_primitive_desc_create(&hint, Engine(), dnnl_forward_training,
                                                           dnnl_convolution_direct, x, w, forward_bias, y, strides,
                                                           dilates, pad_l, pad_r, nullptr) == dnnl_success;
  if (ok && kind == kForward) {
    pd = hint;
    hint = nullptr;
  } else if (ok && kind == kBackwardData) {
    ok = dnnl_convolution_backward_data_primitive_desc_create(&pd, Engine(), dnnl_convolution_direct, dx, w, dy,
                                                              strides, dilates, pad_l, pad_r, hint,
                                                              nullptr) == dnnl_success;
  } else if (ok) {
    ok = dnnl_convolution_backward_weights_primitive_desc_create(&pd, Engine(), dnnl_convolution_direct, x, dw,
                                                                 bias ? b : nullptr, dy, strides, dilates, pad_l,
                                                                 pad_r, hint, nullptr) == dnnl_success;
  }
  for (dnnl_memory_desc_t md : {x, w, y, dy, dx, dw}) dnnl_memory_desc_destroy(md);
  if (hint) dnnl_primitive_desc_destroy(hint);
  if (!ok) {
    dnnl_memory_desc_destroy(b);
    return nullptr;
  }
  Step *step = new Step;
  ok = dnnl_primitive_create(&step->conv, pd) == dnnl_success;
  // Operands: forward (x, w[, b] | y), backward data (dy, w | dx), backward weights (x, dy | dw[, db]).
  struct Slot {
    int arg, query;
    const int64_t *shape;  // null: the bias, [O]
    bool weights, output;
  };
  Slot slots[4];
  int n = 0;
  if (kind == kForward) {
    slots[n++] = {DNNL_ARG_SRC, dnnl_query_src_md, x_shape, false, false};
    slots[n++] = {DNNL_ARG_WEIGHTS, dnnl_query_weights_md, w_shape, true, false};
    if (bias) slots[n++] = {DNNL_ARG_BIAS, 0, nullptr, false, false};
    slots[n++] = {DNNL_ARG_DST, dnnl_query_dst_md, y_shape, false, true};
  } else if (kind == kBackwardData) {
    slots[n++] = {DNNL_ARG_DIFF_DST, dnnl_query_diff_dst_md, y_shape, false, false};
    slots[n++] = {DNNL_ARG_WEIGHTS, dnnl_query_weights_md, w_shape, true, false};
    slots[n++] = {DNNL_ARG_DIFF_SRC, dnnl_query_diff_src_md, x_shape, false, true};
  } else {
    slots[n++] = {DNNL_ARG_SRC, dnnl_query_src_md, x_shape, false, false};
    slots[n++] = {DNNL_ARG_DIFF_DST, dnnl_query_diff_dst_md, y_shape, false, false};
    slots[n++] = {DNNL_ARG_DIFF_WEIGHTS, dnnl_query_diff_weights_md, w_shape, true, true};
    if (bias) slots[n++] = {DNNL_ARG_DIFF_BIAS, 0, nullptr, false, true};
  }
  step->count = n;
  for (int i = 0; i < step->count && ok; ++i) {
    Operand &op = step->operands[i];
    const Slot &slot = slots[i];
    op.arg = slot.arg;
    op.output = slot.output;
    if (!slot.shape) {  // the bias is passed in its plain layout
      ok = dnnl_memory_desc_clone(&op.plain, b) == dnnl_success;
      continue;
    }
    op.plain = Plain(slot.shape, groups, slot.weights);
    ok = dnnl_memory_desc_clone(&op.wanted, dnnl_primitive_desc_query_md(pd, slot.query, 0)) == dnnl_success &&
         (op.output ? Reorder(op.wanted, op.plain, &op.reorder) : Reorder(op.plain, op.wanted, &op.reorder));
  }
  dnnl_memory_desc_destroy(b);
  dnnl_primitive_desc_destroy(pd);
  return ok ? step : nullptr;  // a geometry that fails is not retried (Lookup keeps the nullptr) nor freed
}

Step *Lookup(Kind kind, bool bias, int64_t **shapes, int x, int w, int y, const int64_t *cfg) {
  static std::mutex mutex;
  static std::map<std::vector<int64_t>, Step *> steps;
  std::vector<int64_t> key{kind, bias};
  for (int i : {x, w, y})
    for (int d = 0; d < 4; ++d) key.push_back(shapes[i][d]);
  for (int d = 0; d < 10; ++d) key.push_back(cfg[d]);
  std::lock_guard<std::mutex> lock(mutex);
  auto found = steps.find(key);
  if (found != steps.end()) return found->second;
  Step *step = Build(kind, bias, shapes[x], shapes[w], shapes[y], cfg);
  steps[key] = step;
  return step;
}

// Runs `step` on the plain tensors data[i] (its operands' order): inputs reordered in, outputs reordered out.
int Execute(const Step *step, void *const *data) {
  ThreadState &state = State();
  const int n = step->count;
  dnnl_memory_t plain[4] = {nullptr}, wanted[4] = {nullptr};
  dnnl_exec_arg_t args[4];
  int status = 0;
  for (int i = 0; i < n && status == 0; ++i) {
    const Operand &op = step->operands[i];
    status |= dnnl_memory_create(&plain[i], op.plain, Engine(), data[i]);
    if (op.reorder && status == 0) {
      void *buffer = state.Buffer(i, dnnl_memory_desc_get_size(op.wanted));
      status |= buffer ? dnnl_memory_create(&wanted[i], op.wanted, Engine(), buffer) : 3;
      if (!op.output && status == 0) {
        const dnnl_exec_arg_t reorder_args[2] = {{DNNL_ARG_SRC, plain[i]}, {DNNL_ARG_DST, wanted[i]}};
        status |= dnnl_primitive_execute(op.reorder, state.stream, 2, reorder_args);
      }
    }
    args[i] = {op.arg, wanted[i] ? wanted[i] : plain[i]};
  }
  if (status == 0) status |= dnnl_primitive_execute(step->conv, state.stream, n, args);
  for (int i = 0; i < n && status == 0; ++i) {
    if (step->operands[i].output && step->operands[i].reorder) {
      const dnnl_exec_arg_t reorder_args[2] = {{DNNL_ARG_SRC, wanted[i]}, {DNNL_ARG_DST, plain[i]}};
      status |= dnnl_primitive_execute(step->operands[i].reorder, state.stream, 2, reorder_args);
    }
  }
  if (status == 0) status |= dnnl_stream_wait(state.stream);
  for (int i = 0; i < n; ++i) {
    if (plain[i]) dnnl_memory_destroy(plain[i]);
    if (wanted[i]) dnnl_memory_destroy(wanted[i]);
  }
  return status == 0 ? 0 : status == 3 ? 3 : 4;
}

// nparam operands; cfg (10 values) at index `cfg`; at `like` ([H, W]) and `bias` ([O]) those or none (-1); the
// others 4-D.
bool Checked(int nparam, int expected, int *ndims, int64_t **shapes, int cfg, int like, int bias) {
  if (nparam != expected || !Engine() || ndims[cfg] != 1 || shapes[cfg][0] != 10) return false;
  for (int i = 0; i < nparam; ++i)
    if (i != cfg && ndims[i] != (i == like ? 2 : i == bias ? 1 : 4)) return false;
  return true;
}

int Run(Kind kind, bool bias, int64_t **shapes, int x, int w, int y, const int64_t *cfg,
        std::initializer_list<void *> data) {
  const Step *step = Lookup(kind, bias, shapes, x, w, y, cfg);
  return step ? Execute(step, data.begin()) : 2;
}

}  // namespace

extern "C" int OnednnConv(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  if (!Checked(nparam, 4, ndims, shapes, 2, -1, -1)) return 1;
  return Run(kForward, false, shapes, 0, 1, 3, static_cast<const int64_t *>(params[2]),
             {params[0], params[1], params[3]});
}

extern "C" int OnednnConvBias(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *,
                              void *) {
  if (!Checked(nparam, 5, ndims, shapes, 3, -1, 2)) return 1;
  return Run(kForward, true, shapes, 0, 1, 4, static_cast<const int64_t *>(params[3]),
             {params[0], params[1], params[2], params[4]});
}

extern "C" int OnednnConvData(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *,
                              void *) {
  if (!Checked(nparam, 5, ndims, shapes, 2, 3, -1)) return 1;
  return Run(kBackwardData, false, shapes, 4, 1, 0, static_cast<const int64_t *>(params[2]),
             {params[0], params[1], params[4]});
}

extern "C" int OnednnConvWeights(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *,
                                 void *) {
  if (!Checked(nparam, 5, ndims, shapes, 3, -1, -1)) return 1;
  return Run(kBackwardWeights, false, shapes, 0, 4, 1, static_cast<const int64_t *>(params[3]),
             {params[0], params[1], params[4]});
}

extern "C" int OnednnConvWeightsBias(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *,
                                     void *) {
  if (!Checked(nparam, 6, ndims, shapes, 3, -1, 5)) return 1;
  return Run(kBackwardWeights, true, shapes, 0, 4, 1, static_cast<const int64_t *>(params[3]),
             {params[0], params[1], params[4], params[5]});
}
