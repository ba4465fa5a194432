"""Turning an image or video file into the pixel tensor the video encoder conditions on."""

import math
import os

import torch
import torch.nn.functional as F

from fastltx.media.images import DEFAULT_CRF, h264_round_trip, read_image


def resize_and_center_crop(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(F, H, W, C) or (H, W, C) pixels -> (1, C, F, height, width): bilinear resize (no antialias)
    to cover the target, then centre crop."""
    x = frames.unsqueeze(0) if frames.ndim == 3 else frames
    x = x.permute(0, 3, 1, 2)
    src_h, src_w = x.shape[-2:]
    scale = max(height / src_h, width / src_w)
    new_h, new_w = math.ceil(src_h * scale), math.ceil(src_w * scale)  # ceil: never short of the target
    x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    x = x[:, :, top:top + height, left:left + width]
    return x.permute(1, 0, 2, 3).unsqueeze(0)


def load_conditioning_image(path: str | os.PathLike, height: int, width: int, dtype: torch.dtype,
                            device: torch.device | str = "cpu", crf: int = DEFAULT_CRF) -> torch.Tensor:
    """(1, 3, 1, height, width) in [-1, 1]: decode, H.264 round trip, cover-resize, crop, scale."""
    image = torch.tensor(h264_round_trip(read_image(path), crf), dtype=torch.float32, device=device)
    return (resize_and_center_crop(image, height, width) / 127.5 - 1.0).to(device=device, dtype=dtype)


def load_conditioning_video(path: str | os.PathLike, height: int, width: int, num_frames: int, dtype: torch.dtype,
                            device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, 3, F, height, width) in [-1, 1]: the first ``num_frames`` frames, each cover-resized,
    cropped and scaled (no H.264 round trip: a video already carries its compression)."""
    from fastltx.media.video_in import read_video

    frames = read_video(path, num_frames).to(device=device, dtype=torch.float32)
    return (resize_and_center_crop(frames, height, width) / 127.5 - 1.0).to(device=device, dtype=dtype)
