"""Conditioning-image preparation equals the reference's load_image_conditioning (identical tensors)."""

import numpy as np
import pytest
import torch

from fastltx.conditioning.images import load_conditioning_image
from fastltx.media.errors import MediaError
from tests.parity.reference import require_reference

pytestmark = pytest.mark.parity


def write_image(path, h, w, mode="RGB", seed=0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (h + w)], -1)
    arr = np.clip(base + rng.integers(-30, 30, (h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr)
    if mode == "RGBA":
        img = img.convert("RGBA")
    img.save(path)
    return path


@pytest.mark.parametrize("size,target,ext,mode", [((75, 101), (64, 96), "png", "RGB"),
                                                  ((120, 90), (64, 96), "jpg", "RGB"),
                                                  ((64, 64), (128, 192), "png", "RGBA")])
@pytest.mark.parametrize("crf", [33, 0])
def test_matches_reference(tmp_path, size, target, ext, mode, crf):
    require_reference()
    from ltx_pipelines.utils.media_io import load_image_conditioning
    path = write_image(tmp_path / f"img.{ext}", *size, mode=mode)
    ours = load_conditioning_image(path, *target, torch.float32, crf=crf)
    ref = load_image_conditioning(str(path), *target, torch.float32, torch.device("cpu"), crf=crf)
    assert ours.shape == ref.shape == (1, 3, 1, *target)
    assert torch.equal(ours, ref)


def test_bad_image_files(tmp_path):
    with pytest.raises(MediaError, match="no such image"):
        load_conditioning_image(tmp_path / "none.png", 64, 64, torch.float32)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(MediaError, match="cannot read the image"):
        load_conditioning_image(bad, 64, 64, torch.float32)
