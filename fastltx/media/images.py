"""Images in: decoding to RGB, and the libx264 round trip the reference applies to conditioning images.

The reference encodes each conditioning image as a one-frame H.264 video (CRF 33, preset
veryfast, yuv420p, even size) and decodes it back, so the model sees compression artefacts like
those of its training videos; we do the same, through the same FFmpeg.
"""

import io
import os
from pathlib import Path

import numpy as np

from fastltx.media.errors import MediaError

DEFAULT_CRF = 33


def read_image(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB (alpha dropped, grey and palette images expanded)."""
    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():
        raise MediaError(path, "no such image file")
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise MediaError(path, f"cannot read the image ({e})") from None


def h264_round_trip(image: np.ndarray, crf: int = DEFAULT_CRF) -> np.ndarray:
    """Encode (H, W, 3) uint8 as one H.264 frame and decode it; odd sizes lose their last row/column.
    CRF 0 returns the image untouched."""
    import av

    if crf == 0:
        return image
    h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=1, options={"crf": str(crf), "preset": "veryfast"})
        s.height, s.width = h, w
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:h, :w]), format="rgb24").reformat(format="yuv420p")
        c.mux(s.encode(frame))
        c.mux(s.encode())
    buffer.seek(0)
    with av.open(buffer) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")
