// Fused multi-step LIF on the CPU: one pass over the time steps per block of
// neurons, float32, contiguous [T, N] tensors.
//
// The arithmetic follows SpikingJelly's LIFNode operation by operation
// (compiled with -ffp-contract=off, so no fused multiply-add changes a
// rounding), which keeps the spikes bit-identical.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

namespace {

// 256 neurons: the membrane potentials of a block stay in L1 across steps.
constexpr int64_t kBlock = 256;

int64_t num_blocks(int64_t n) { return (n + kBlock - 1) / kBlock; }

void check_float32_like(const torch::Tensor& tensor, const torch::Tensor& like, const char* name) {
  TORCH_CHECK(tensor.dtype() == torch::kFloat32 && tensor.is_contiguous() && tensor.sizes() == like.sizes(),
              name, " must be a contiguous float32 tensor of shape ", like.sizes());
}

}  // namespace

// One block of neurons over all time steps, forward. The reset is written as
// SpikingJelly writes it, in arithmetic rather than branches, so the loop
// vectorizes whatever the firing rate.
template <bool SoftReset, bool KeepH>
void forward_block(const float* xp, float* sp, float* hp, int64_t n, int64_t steps, int64_t start, int64_t len,
                   float tau, float vth, float vreset) {
  float v[kBlock];
  std::fill(v, v + len, vreset);
  for (int64_t t = 0; t < steps; ++t) {
    const float* __restrict__ xt = xp + t * n + start;
    float* __restrict__ st = sp + t * n + start;
    float* __restrict__ ht = KeepH ? hp + t * n + start : nullptr;
    for (int64_t i = 0; i < len; ++i) {
      const float hv = v[i] + (xt[i] - (v[i] - vreset)) / tau;
      const float spike = hv >= vth ? 1.0f : 0.0f;
      if (KeepH) {
        ht[i] = hv;
      }
      st[i] = spike;
      v[i] = SoftReset ? hv - spike * vth : (1.0f - spike) * hv + spike * vreset;
    }
  }
}

// Writes spikes and H: H[t] = V[t-1] + (X[t] - (V[t-1] - v_reset)) / tau,
// S[t] = H[t] >= v_threshold, V[t] = reset(H[t], S[t]), V[-1] = v_reset.
// An empty h (inference) skips writing H.
void lif_forward(
    const torch::Tensor& x, torch::Tensor& spikes, torch::Tensor& h, double tau, double v_threshold,
    double v_reset, bool soft_reset) {
  TORCH_CHECK(x.dim() >= 1, "x must have a time dimension");
  check_float32_like(x, x, "x");
  check_float32_like(spikes, x, "spikes");
  const bool keep_h = h.numel() != 0;
  if (keep_h) {
    check_float32_like(h, x, "h");
  }
  const int64_t steps = x.size(0);
  const int64_t n = steps == 0 ? 0 : x.numel() / steps;
  const float* xp = x.data_ptr<float>();
  float* sp = spikes.data_ptr<float>();
  float* hp = keep_h ? h.data_ptr<float>() : nullptr;
  const float tau_f = static_cast<float>(tau);
  const float vth = static_cast<float>(v_threshold);
  const float vreset = static_cast<float>(v_reset);

  at::parallel_for(0, num_blocks(n), 1, [&](int64_t first, int64_t last) {
    for (int64_t block = first; block < last; ++block) {
      const int64_t start = block * kBlock;
      const int64_t len = std::min(kBlock, n - start);
      if (soft_reset && keep_h) {
        forward_block<true, true>(xp, sp, hp, n, steps, start, len, tau_f, vth, vreset);
      } else if (soft_reset) {
        forward_block<true, false>(xp, sp, hp, n, steps, start, len, tau_f, vth, vreset);
      } else if (keep_h) {
        forward_block<false, true>(xp, sp, hp, n, steps, start, len, tau_f, vth, vreset);
      } else {
        forward_block<false, false>(xp, sp, hp, n, steps, start, len, tau_f, vth, vreset);
      }
    }
  });
}

// One block of neurons over all time steps, backward, for a detached reset.
// Surrogate 0 is ATan, 1 is sigmoid.
template <bool SoftReset, int Surrogate>
void backward_block(const float* gp, const float* hp, float* op, int64_t n, int64_t steps, int64_t start,
                    int64_t len, float tau, float vth, float alpha) {
  const float decay = 1.0f - 1.0f / tau;
  const float atan_scale = static_cast<float>(M_PI / 2.0) * alpha;
  float grad_v[kBlock];
  std::fill(grad_v, grad_v + len, 0.0f);
  for (int64_t t = steps - 1; t >= 0; --t) {
    const float* __restrict__ gt = gp + t * n + start;
    const float* __restrict__ ht = hp + t * n + start;
    float* __restrict__ ot = op + t * n + start;
    for (int64_t i = 0; i < len; ++i) {
      const float distance = ht[i] - vth;
      float sg;
      if (Surrogate == 0) {
        const float scaled = atan_scale * distance;
        sg = alpha / 2.0f / (1.0f + scaled * scaled);
      } else {
        const float sig = 1.0f / (1.0f + std::exp(-alpha * distance));
        sg = alpha * sig * (1.0f - sig);
      }
      // dV/dH: 1 for a soft reset, 1 - S for a hard one (the spike is detached).
      const float keep = SoftReset ? 1.0f : (distance >= 0.0f ? 0.0f : 1.0f);
      const float grad_h = gt[i] * sg + grad_v[i] * keep;
      ot[i] = grad_h / tau;
      grad_v[i] = grad_h * decay;
    }
  }
}

// Writes dL/dX for a detached reset, from dL/dS and the saved H:
// dL/dH[t] = dL/dS[t] sg(H[t] - v_th) + dL/dV[t] dV/dH[t], dL/dX[t] = dL/dH[t] / tau,
// dL/dV[t-1] = dL/dH[t] (1 - 1/tau).
void lif_backward(
    const torch::Tensor& grad_spikes, const torch::Tensor& h, torch::Tensor& grad_x, double tau,
    double v_threshold, double alpha, bool soft_reset, int64_t surrogate) {
  check_float32_like(h, h, "h");
  check_float32_like(grad_spikes, h, "grad_spikes");
  check_float32_like(grad_x, h, "grad_x");
  TORCH_CHECK(surrogate == 0 || surrogate == 1, "surrogate must be 0 (ATan) or 1 (sigmoid), got ", surrogate);
  const int64_t steps = h.size(0);
  const int64_t n = steps == 0 ? 0 : h.numel() / steps;
  const float* gp = grad_spikes.data_ptr<float>();
  const float* hp = h.data_ptr<float>();
  float* op = grad_x.data_ptr<float>();
  const float tau_f = static_cast<float>(tau);
  const float vth = static_cast<float>(v_threshold);
  const float alpha_f = static_cast<float>(alpha);

  at::parallel_for(0, num_blocks(n), 1, [&](int64_t first, int64_t last) {
    for (int64_t block = first; block < last; ++block) {
      const int64_t start = block * kBlock;
      const int64_t len = std::min(kBlock, n - start);
      if (soft_reset && surrogate == 0) {
        backward_block<true, 0>(gp, hp, op, n, steps, start, len, tau_f, vth, alpha_f);
      } else if (soft_reset) {
        backward_block<true, 1>(gp, hp, op, n, steps, start, len, tau_f, vth, alpha_f);
      } else if (surrogate == 0) {
        backward_block<false, 0>(gp, hp, op, n, steps, start, len, tau_f, vth, alpha_f);
      } else {
        backward_block<false, 1>(gp, hp, op, n, steps, start, len, tau_f, vth, alpha_f);
      }
    }
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("lif_forward", &lif_forward, "Fused multi-step LIF forward: writes spikes and H");
  m.def("lif_backward", &lif_backward, "Fused multi-step LIF backward with a detached reset: writes dL/dX");
}
