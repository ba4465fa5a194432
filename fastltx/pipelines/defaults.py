"""Default generation parameters of the official pipelines, per model version."""

from dataclasses import dataclass

from fastltx.checkpoint.safetensors_file import read_header
from fastltx.sampling.guidance import GuidanceSchedule, GuiderParams

# The official default negative prompt (ltx-pipelines 1.0.0).
NEGATIVE_PROMPT = (
    "blurry, out of focus, overexposed, underexposed, low contrast, washed out colors, excessive noise, "
    "grainy texture, poor lighting, flickering, motion blur, distorted proportions, unnatural skin tones, "
    "deformed facial features, asymmetrical face, missing facial features, extra limbs, disfigured hands, "
    "wrong hand count, artifacts around text, inconsistent perspective, camera shake, incorrect depth of "
    "field, background too sharp, background clutter, distracting reflections, harsh shadows, inconsistent "
    "lighting direction, color banding, cartoonish rendering, 3D CGI look, unrealistic materials, uncanny "
    "valley effect, incorrect ethnicity, wrong gender, exaggerated expressions, wrong gaze direction, "
    "mismatched lip sync, silent or muted audio, distorted voice, robotic voice, echo, background noise, "
    "off-sync audio, incorrect dialogue, added dialogue, repetitive speech, jittery movement, awkward "
    "pauses, incorrect timing, unnatural transitions, inconsistent framing, tilted camera, flat lighting, "
    "inconsistent tone, cinematic oversaturation, stylized filters, or AI artifacts."
)


@dataclass(frozen=True)
class GuidedDefaults:
    steps: int
    video: GuiderParams
    audio: GuiderParams


def _params(stg_block: int) -> GuidedDefaults:
    return GuidedDefaults(0, GuiderParams(3.0, 1.0, (stg_block,), 0.7, 3.0), GuiderParams(7.0, 1.0, (stg_block,), 0.7, 3.0))


LTX2 = GuidedDefaults(40, _params(29).video, _params(29).audio)
LTX23 = GuidedDefaults(30, _params(28).video, _params(28).audio)
HQ = GuidedDefaults(15, GuiderParams(3.0, 0.0, (), 0.45, 3.0), GuiderParams(7.0, 0.0, (), 1.0, 3.0))
RETAKE_STEPS = 40  # the official retake's default, whatever the model version
HQ_STAGE_LORA_STRENGTHS = (0.25, 0.5)  # distilled LoRA in stage 1 and stage 2 of the HQ pipeline


def guided_defaults(checkpoint: str) -> GuidedDefaults:
    """LTX-2.3 defaults for checkpoints whose ``model_version`` starts with 2.3, else LTX-2's."""
    return LTX23 if read_header(checkpoint).metadata.get("model_version", "").startswith("2.3") else LTX2


def as_schedule(guidance: GuiderParams | GuidanceSchedule) -> GuidanceSchedule:
    return guidance if isinstance(guidance, GuidanceSchedule) else GuidanceSchedule.constant(guidance)
