"""Probe: does cuBLASLt's GELU epilogue (torch._addmm_activation) compute the tanh GELU, and how much
does fusing it into the feed-forward's first GEMM save at the 19B shape (6,144 x 4,096 -> 16,384)?"""

import torch
import torch.nn.functional as F

from bench.common import time_cuda

if __name__ == "__main__":
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(6144, 4096, generator=g, device="cuda", dtype=torch.bfloat16)
    w = (torch.randn(16384, 4096, generator=g, device="cuda") / 64).to(torch.bfloat16)
    b = (torch.randn(16384, generator=g, device="cuda") * 0.02).to(torch.bfloat16)
    fused = torch._addmm_activation(b, x, w.t(), use_gelu=True)
    lin = F.linear(x, w, b)
    tanh, exact = F.gelu(lin, approximate="tanh"), F.gelu(lin)
    print(f"max |epilogue - gelu_tanh(linear)| = {(fused.float() - tanh.float()).abs().max():.3e}; "
          f"vs exact gelu {(fused.float() - exact.float()).abs().max():.3e}; "
          f"max |tanh - exact| {(tanh.float() - exact.float()).abs().max():.3e}")
    t_sep = time_cuda(lambda: F.gelu(F.linear(x, w, b), approximate="tanh"), reps=20)
    t_fused = time_cuda(lambda: torch._addmm_activation(b, x, w.t(), use_gelu=True), reps=20)
    print(f"linear + gelu: {t_sep:.3f} ms, epilogue: {t_fused:.3f} ms ({torch.cuda.get_device_name()})")
