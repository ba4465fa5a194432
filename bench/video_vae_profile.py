"""Where one untiled 19B video decode spends its GPU time: ltx-core, fastltx eager (plain weights) and
fastltx fused (channels-last weights), kernel time by kind and the largest kernels (torch.profiler).

    python bench/video_vae_profile.py [--sizes 1024x1536] [--top 8]
"""

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.video_vae import random_decoder, random_latent, reference_decoder_on_weights  # noqa: E402
from fastltx.layers.conv import to_channels_last  # noqa: E402

KINDS = (("fused (ours)", ("norm_act_pad", "depth_to_space_kernel", "add_bias_residual")),
         ("convolution", ("conv", "xmma", "cudnn", "fprop", "implicit", "cutlass", "sm90", "dgrad", "wgrad")),
         ("reduction", ("reduce",)),
         ("copy / layout", ("copy", "cat", "pad", "reflection", "nchw", "nhwc", "transpose")),
         ("elementwise", ("elementwise", "vectorized", "unrolled")))


def kind(name: str) -> str:
    low = name.lower()
    for label, keys in KINDS:
        if any(k in low for k in keys):
            return label
    return "other"


def profile_decode(fn, top: int) -> None:
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    by_kind, by_name = defaultdict(float), defaultdict(lambda: [0.0, 0])
    for e in kernels:
        us = e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
        by_kind[kind(e.name)] += us
        by_name[e.name][0] += us
        by_name[e.name][1] += 1
    total = sum(by_kind.values())
    print(f"  kernels {total / 1e3:.1f} ms: " + ", ".join(f"{k} {v / 1e3:.1f}" for k, v in
                                                      sorted(by_kind.items(), key=lambda kv: -kv[1])))
    for name, (us, n) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"    {us / 1e3:8.1f} ms {n:4d}x [{kind(name)}] {name[:110]}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1024x1536")
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args(argv)
    print(f"card: {torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    plain = random_decoder(device="cuda")
    ref = reference_decoder_on_weights("v1", "19b", plain)
    fused = to_channels_last(random_decoder(device="cuda"))
    for size in args.sizes.split(","):
        height, width = (int(v) for v in size.split("x"))
        latent = random_latent(height, width, 121, "cuda")
        models = (("ltx-core", ref), ("fastltx eager (plain)", plain), ("fastltx fused (channels-last)", fused))
        for label, model in models:
            print(f"{size} {label}:")
            with torch.inference_mode():
                profile_decode(lambda m=model: m(latent, generator=torch.Generator("cuda").manual_seed(0)), args.top)
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
