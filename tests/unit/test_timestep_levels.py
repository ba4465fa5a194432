"""Timestep levels: the per-token timesteps in factored form (distinct values, each token's index),
found once per denoise mask so that the steps never wait for the GPU (tests/gpu/test_no_host_sync.py);
the model computes from them exactly what it computes from the timesteps themselves. Also the Euler
step on a schedule read as Python floats, bit for bit the step on float32 tensors."""

import gc
from dataclasses import replace

import pytest
import torch

from fastltx.checkpoint.factory import random_transformer, transformer_config
from fastltx.sampling.denoisers import _cat_levels, modality
from fastltx.sampling.state import _MASK_LEVELS, TokenState
from fastltx.sampling.steps import euler_step
from tests.parity.test_transformer import inputs


def state_with(mask: torch.Tensor) -> TokenState:
    b, t = mask.shape[:2]
    latent = torch.randn(b, t, 8)
    return TokenState(latent, latent.clone(), mask, torch.zeros(b, 3, t, 2))


def test_levels_rebuild_the_timesteps():
    mask = torch.ones(2, 10, 1)
    mask[0, :3] = 0.0
    mask[1, 5:] = 0.25  # a conditioning strength
    state = state_with(mask)
    sigma = torch.tensor(0.7)
    values, index = state.timestep_levels(sigma)
    assert index.shape == (2, 10) and values.shape == (3,)
    assert torch.equal(values[index], state.timesteps(sigma).reshape(2, 10))  # bit for bit
    assert state.timestep_levels(sigma)[0] is values  # the same sigma: the same values object
    other = torch.tensor(0.5)
    assert torch.equal(state.timestep_levels(other)[0][index], state.timesteps(other).reshape(2, 10))
    alike = state_with(torch.ones(2, 10, 1))
    values, index = alike.timestep_levels(sigma)
    assert index.shape == (2, 1) and torch.equal(values[index], torch.full((2, 1), 0.7))
    assert alike.timestep_levels(torch.tensor([0.7, 0.5])) is None  # per-sample sigma: not factored


def test_levels_follow_the_mask():
    mask = torch.ones(1, 6, 1)
    state = state_with(mask)
    sigma = torch.tensor(0.9)
    assert state.timestep_levels(sigma)[1].shape == (1, 1)
    mask[:, :2] = 0.0  # modified in place: found again
    values, index = state.timestep_levels(sigma)
    assert torch.equal(values[index], state.timesteps(sigma).reshape(1, 6))
    key = id(mask)
    assert key in _MASK_LEVELS.entries
    del state, mask
    gc.collect()
    assert key not in _MASK_LEVELS.entries  # dropped with its mask


def test_batched_passes_share_or_stack_levels():
    sigma = torch.tensor(0.6)
    a = state_with(torch.ones(1, 5, 1))
    mask = torch.ones(1, 5, 1)
    mask[:, 0] = 0.0
    b = state_with(mask)
    shared = _cat_levels([a.timestep_levels(sigma)] * 3)
    assert shared[0] is a.timestep_levels(sigma)[0] and shared[1].shape == (3, 1)
    values, index = _cat_levels([a.timestep_levels(sigma), b.timestep_levels(sigma)])
    want = torch.cat([a.timesteps(sigma), b.timesteps(sigma)]).reshape(2, 5)
    assert torch.equal(values[index], want)
    assert _cat_levels([a.timestep_levels(sigma), None]) is None


@pytest.mark.parametrize("version", ["v1", "v2"])
@torch.no_grad()
def test_model_gives_the_same_with_levels(version):
    model = random_transformer(transformer_config(version, num_layers=2), seed=4, dtype=torch.float32)
    v, a = inputs(model, torch.float32, sigmas=(0.8,), clean_tokens=3)
    mask = torch.ones(*v.latent.shape[:2], 1)
    mask[:, -3:] = 0.0  # the appended clean tokens
    sigma = torch.tensor(0.8)
    states = [TokenState(m.latent, m.latent.clone(), torch.ones(*m.latent.shape[:2], 1) if m is a else mask,
                         m.positions) for m in (v, a)]
    with_levels = [modality(s, m.context, sigma) for s, m in zip(states, (v, a))]
    assert all(m.timestep_levels is not None for m in with_levels)
    without = [replace(m, timestep_levels=None) for m in with_levels]
    got, want = model(*with_levels), model(*without)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_euler_step_on_floats_equals_the_step_on_tensors():
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 64, 16, generator=gen).to(torch.bfloat16)
    denoised = torch.randn(2, 64, 16, generator=gen).to(torch.bfloat16)
    sigmas = torch.tensor([1.0, 0.99375, 0.9875, 0.725, 0.421875, 0.0], dtype=torch.float32)
    host = sigmas.tolist()
    for i in range(len(host) - 1):
        assert torch.equal(euler_step(sample, denoised, host[i], host[i + 1]),
                           euler_step(sample, denoised, sigmas[i], sigmas[i + 1]))
