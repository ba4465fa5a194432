"""Vocoder configurations, read from ``config["vocoder"]`` of an official checkpoint.

LTX-2 files carry a flat HiFi-GAN section (``resblock: "1"``); LTX-2.3 files nest a BigVGAN-v2 style
base vocoder and a bandwidth-extension generator: ``{"vocoder": {...}, "bwe": {...}}`` (AMP1
blocks with SnakeBeta activations). Absent keys take the reference's defaults.
"""

from dataclasses import asdict, dataclass, field

from fastltx.checkpoint.safetensors_file import CheckpointError

MEL_CHANNELS = 128  # stereo x 64 mel bins, fixed in every released vocoder


@dataclass(frozen=True)
class GeneratorConfig:
    """One mel-to-waveform generator (the HiFi-GAN of LTX-2, or either generator of LTX-2.3)."""

    upsample_initial_channel: int = 1024
    upsample_rates: tuple[int, ...] = (6, 5, 2, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 15, 8, 4, 4)
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    amp: bool = False  # AMP1 blocks with anti-aliased SnakeBeta (True) or ResBlock1 with leaky ReLU
    output_sampling_rate: int = 24000
    use_tanh_at_final: bool = True  # else clamp to [-1, 1]
    apply_final_activation: bool = True
    use_bias_at_final: bool = True

    def to_section(self) -> dict:
        d = asdict(self)
        d.pop("apply_final_activation")
        d.update(resblock="AMP1" if d.pop("amp") else "1", stereo=True,
                 resblock_dilation_sizes=[list(s) for s in self.resblock_dilation_sizes])
        if self.amp:
            d["activation"] = "snakebeta"
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def parse(cls, s: dict, path: str, where: str, amp: bool, **override) -> "GeneratorConfig":
        want = {"resblock": "AMP1" if amp else "1", "stereo": True, **({"activation": "snakebeta"} if amp else {})}
        for key, value in want.items():
            if s.get(key) != value:
                raise CheckpointError(path, f"unsupported vocoder layout: {where}.{key}={s.get(key)!r} "
                                            f"(expected {value!r})")
        d = cls()
        try:
            kwargs = dict(
                upsample_initial_channel=int(s.get("upsample_initial_channel", d.upsample_initial_channel)),
                upsample_rates=tuple(int(r) for r in s.get("upsample_rates", d.upsample_rates)),
                upsample_kernel_sizes=tuple(int(k) for k in s.get("upsample_kernel_sizes", d.upsample_kernel_sizes)),
                resblock_kernel_sizes=tuple(int(k) for k in s.get("resblock_kernel_sizes", d.resblock_kernel_sizes)),
                resblock_dilation_sizes=tuple(tuple(int(x) for x in ds)
                                              for ds in s.get("resblock_dilation_sizes", d.resblock_dilation_sizes)),
                amp=amp, output_sampling_rate=int(s.get("output_sampling_rate", d.output_sampling_rate)),
                use_tanh_at_final=bool(s.get("use_tanh_at_final", True)),
                use_bias_at_final=bool(s.get("use_bias_at_final", True)))
            cfg = cls(**{**kwargs, **override})
        except (TypeError, ValueError) as e:
            raise CheckpointError(path, f"malformed vocoder config {where}: {e}") from None
        if (len(cfg.upsample_rates) != len(cfg.upsample_kernel_sizes)
                or len(cfg.resblock_kernel_sizes) != len(cfg.resblock_dilation_sizes)):
            raise CheckpointError(path, f"malformed vocoder config {where}: upsample rates/kernel sizes or resblock "
                                        "kernel sizes/dilations differ in length")
        return cfg


@dataclass(frozen=True)
class BWEConfig:
    """LTX-2.3 bandwidth extension: causal STFT mel of the base output -> residual at the higher rate."""

    generator: GeneratorConfig
    input_sampling_rate: int = 16000
    output_sampling_rate: int = 48000
    n_fft: int = 512
    hop_length: int = 80
    num_mels: int = 64


@dataclass(frozen=True)
class VocoderConfig:
    generator: GeneratorConfig
    bwe: BWEConfig | None = None
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def output_sampling_rate(self) -> int:
        return self.bwe.output_sampling_rate if self.bwe else self.generator.output_sampling_rate

    def to_checkpoint_section(self) -> dict:
        """The ``config["vocoder"]`` section an official file carries for this configuration."""
        if self.bwe is None:
            return self.generator.to_section()
        b = self.bwe
        bwe = dict(b.generator.to_section(), apply_final_activation=False, input_sampling_rate=b.input_sampling_rate,
                   output_sampling_rate=b.output_sampling_rate, hop_length=b.hop_length, n_fft=b.n_fft,
                   win_size=b.n_fft, num_mels=b.num_mels)
        base = self.generator.to_section()
        base.pop("output_sampling_rate")  # the base rate is the BWE's input rate
        return {"vocoder": base, "bwe": bwe}

    @classmethod
    def from_checkpoint_config(cls, config: dict, path: str) -> "VocoderConfig":
        section = config.get("vocoder")
        if not isinstance(section, dict):
            raise CheckpointError(path, "the header config has no 'vocoder' section")
        if "bwe" not in section:
            return cls(GeneratorConfig.parse(section, path, "vocoder", amp=False), raw=dict(section))
        b = section["bwe"]
        try:
            rates = dict(input_sampling_rate=int(b["input_sampling_rate"]),
                         output_sampling_rate=int(b["output_sampling_rate"]), n_fft=int(b["n_fft"]),
                         hop_length=int(b["hop_length"]), num_mels=int(b["num_mels"]))
        except KeyError as e:
            raise CheckpointError(path, f"the vocoder's bwe config lacks the required key {e.args[0]!r}") from None
        base = GeneratorConfig.parse(section.get("vocoder", {}), path, "vocoder.vocoder", amp=True,
                                     output_sampling_rate=rates["input_sampling_rate"])
        gen = GeneratorConfig.parse(b, path, "vocoder.bwe", amp=True, apply_final_activation=False,
                                    output_sampling_rate=rates["output_sampling_rate"])
        if rates["output_sampling_rate"] % rates["input_sampling_rate"]:
            raise CheckpointError(path, "unsupported vocoder layout: the BWE output rate is not a multiple of "
                                        "its input rate")
        return cls(base, BWEConfig(gen, **rates), raw=dict(section))
