"""Denoising steps never make the host wait for the GPU (skipped without CUDA).

A step that reads a value back from the GPU (``.item()``, ``torch.unique``'s size, a pageable
host-to-device copy) stops the host until the GPU has caught up, so the next step's launches
(hundreds of small kernels before the blocks) run on an idle GPU. After a first loop (text cache,
the masks' timestep levels, CUDA graph recordings), every later step is checked with PyTorch's
sync debug mode set to raise; the loop reads the schedule once before its first step.
"""

import pytest
import torch

from fastltx.sampling.denoisers import SimpleDenoiser
from fastltx.sampling.loops import euler_loop, gradient_estimating_loop
from fastltx.sampling.state import TokenState
from tests.gpu.test_cuda_graph import model_on_cuda
from tests.gpu.test_offload_cuda import cuda_inputs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


class Checked:
    """A denoiser that turns on the sync check at its first call (after the loop read its schedule)."""

    def __init__(self, denoise):
        self.denoise = denoise

    def __call__(self, *args):
        torch.cuda.set_sync_debug_mode("error")
        return self.denoise(*args)


@pytest.mark.parametrize("loop", [euler_loop, gradient_estimating_loop])
@pytest.mark.parametrize("graphed", [False, True])
def test_denoising_steps_do_not_wait_for_the_gpu(loop, graphed):
    model = model_on_cuda()
    v, a = cuda_inputs(model, sigmas=(0.8,), seed=1)
    mask = torch.ones(*v.latent.shape[:2], 1, device="cuda")
    mask[:, :4] = 0.0  # conditioning tokens: two timestep levels in the video stream
    video = TokenState(v.latent, v.latent.clone(), mask, v.positions)
    audio = TokenState(a.latent, a.latent.clone(), torch.ones(*a.latent.shape[:2], 1, device="cuda"), a.positions)
    sigmas = torch.tensor([1.0, 0.9, 0.7, 0.4, 0.0], device="cuda")
    denoiser = SimpleDenoiser(model, v.context, a.context)
    if graphed:
        model.graph_blocks()
    with torch.no_grad():
        for _ in range(3):  # text cache, timestep levels, graph recordings
            want = loop(sigmas, video, audio, denoiser, progress=False)
        torch.cuda.synchronize()
        try:
            got = loop(sigmas, video, audio, Checked(denoiser), progress=False)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    for g, w in zip(got, want):
        assert torch.equal(g.latent, w.latent)


def test_euler_step_on_floats_equals_the_step_on_cuda_tensors():
    from fastltx.sampling.steps import euler_step
    gen = torch.Generator(device="cuda").manual_seed(0)
    sample, denoised = (torch.randn(2, 4096, 128, generator=gen, device="cuda").to(torch.bfloat16) for _ in range(2))
    sigmas = torch.tensor([1.0, 0.99375, 0.9875, 0.725, 0.421875, 0.0], device="cuda")
    host = sigmas.tolist()
    for i in range(len(host) - 1):
        assert torch.equal(euler_step(sample, denoised, host[i], host[i + 1]),
                           euler_step(sample, denoised, sigmas[i], sigmas[i + 1]))


def test_perturbed_forward_does_not_wait_for_the_gpu():
    """A batched guided forward (STG, isolated modalities): its keep masks reach the GPU without a wait."""
    from fastltx.models.transformer import Perturbation
    from fastltx.sampling.denoisers import modality
    model = model_on_cuda()
    v, a = cuda_inputs(model, sigmas=(0.8, 0.8, 0.8), seed=2)
    sigma = torch.tensor(0.8, device="cuda")
    states = [TokenState(m.latent, m.latent.clone(), torch.ones(*m.latent.shape[:2], 1, device="cuda"), m.positions)
              for m in (v, a)]
    inputs = [modality(s, m.context, sigma) for s, m in zip(states, (v, a))]
    perturbations = [Perturbation(), Perturbation.stg([1]), Perturbation.isolate_modalities()]
    with torch.no_grad():
        want = model(*inputs, perturbations)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            got = model(*inputs, perturbations)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
