"""The audio VAE's configuration, read from ``config["audio_vae"]`` of an official checkpoint.

Layout of that section: ``model.params.ddconfig`` (network geometry), ``model.params.sampling_rate``,
optional ``preprocessing.stft`` (hop_length, filter_length, causal), ``preprocessing.mel``
(n_mel_channels) and ``variables.mel_bins``. Absent keys take the reference's defaults. Layouts the
released models do not use (group norm, non-causal or width-causal convolutions, attention types
other than vanilla/none, pooling downsamplers, a single-headed latent) are refused with a clear error.
"""

from dataclasses import dataclass, field

from fastltx.checkpoint.safetensors_file import CheckpointError

LATENT_DOWNSAMPLE = 4  # mel frames per latent frame (fixed in the reference, whatever ch_mult says)
SUPPORTED = {"norm_type": "pixel", "causality_axis": "height", "double_z": True, "resamp_with_conv": True}


@dataclass(frozen=True)
class AudioVAEConfig:
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    z_channels: int = 8
    in_channels: int = 2
    out_ch: int = 2
    resolution: int = 256
    attn_resolutions: tuple[int, ...] = (8, 16, 32)
    mid_block_add_attention: bool = True
    encoder_attention: bool = True  # attn_type "vanilla" (True) or "none" (False); the decoder always uses vanilla
    mel_bins: int | None = 64
    sample_rate: int = 16000
    mel_hop_length: int = 160
    n_fft: int = 1024
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def levels(self) -> int:
        return len(self.ch_mult)

    @property
    def latent_mel_bins(self) -> int | None:
        """Mel bins after the encoder's downsamplers (each maps w to (w - 2) // 2 + 1)."""
        if self.mel_bins is None:
            return None
        w = self.mel_bins
        for _ in range(self.levels - 1):
            w = (w - 2) // 2 + 1
        return w

    def attention_at(self, level: int) -> bool:
        """Whether resolution level ``level`` (0 = full) carries attention blocks."""
        return self.resolution // 2**level in self.attn_resolutions

    def to_checkpoint_section(self, preprocessing: bool = False) -> dict:
        """The ``config["audio_vae"]`` section an official file carries for this configuration;
        ``preprocessing`` also writes the ``preprocessing``/``variables`` blocks (older headers)."""
        dd = dict(SUPPORTED, ch=self.ch, ch_mult=list(self.ch_mult), num_res_blocks=self.num_res_blocks,
                  z_channels=self.z_channels, in_channels=self.in_channels, out_ch=self.out_ch,
                  resolution=self.resolution, attn_resolutions=list(self.attn_resolutions),
                  mid_block_add_attention=self.mid_block_add_attention, dropout=0.0,
                  attn_type="vanilla" if self.encoder_attention else "none", mel_bins=self.mel_bins)
        section = {"model": {"params": {"ddconfig": dd, "sampling_rate": self.sample_rate}}}
        if preprocessing:
            section["preprocessing"] = {"stft": {"hop_length": self.mel_hop_length, "filter_length": self.n_fft,
                                                 "causal": True}, "mel": {"n_mel_channels": self.mel_bins}}
            section["variables"] = {"mel_bins": self.mel_bins}
        return section

    @classmethod
    def from_checkpoint_config(cls, config: dict, path: str) -> "AudioVAEConfig":
        section = config.get("audio_vae")
        if not isinstance(section, dict):
            raise CheckpointError(path, "the header config has no 'audio_vae' section")
        params = section.get("model", {}).get("params", {})
        dd = params.get("ddconfig", {})
        stft = section.get("preprocessing", {}).get("stft", {})
        mel = section.get("preprocessing", {}).get("mel", {})
        for key, want in SUPPORTED.items():  # each default is the supported value
            if dd.get(key, want) != want:
                raise CheckpointError(path, f"unsupported audio VAE layout: ddconfig.{key}={dd.get(key)!r} "
                                            f"(supported: {want!r})")
        if not stft.get("causal", True):
            raise CheckpointError(path, "unsupported audio VAE layout: preprocessing.stft.causal=false")
        attn_type = dd.get("attn_type", "vanilla")
        if attn_type not in ("vanilla", "none"):
            raise CheckpointError(path, f"unsupported audio VAE layout: ddconfig.attn_type={attn_type!r}")
        mel_bins = dd.get("mel_bins") or mel.get("n_mel_channels") or section.get("variables", {}).get("mel_bins")
        cfg = cls(
            ch=int(dd.get("ch", 128)), ch_mult=tuple(int(m) for m in dd.get("ch_mult", (1, 2, 4))),
            num_res_blocks=int(dd.get("num_res_blocks", 2)), z_channels=int(dd.get("z_channels", 8)),
            in_channels=int(dd.get("in_channels", 2)), out_ch=int(dd.get("out_ch", 2)),
            resolution=int(dd.get("resolution", 256)),
            attn_resolutions=tuple(int(r) for r in dd.get("attn_resolutions", (8, 16, 32))),
            mid_block_add_attention=bool(dd.get("mid_block_add_attention", True)),
            encoder_attention=attn_type == "vanilla", mel_bins=int(mel_bins) if mel_bins else None,
            sample_rate=int(params.get("sampling_rate", 16000)), mel_hop_length=int(stft.get("hop_length", 160)),
            n_fft=int(stft.get("filter_length", 1024)), raw=dict(section))
        latent = cfg.z_channels * (cfg.latent_mel_bins or 0)
        if cfg.mel_bins is not None and latent != cfg.ch:
            raise CheckpointError(path, f"inconsistent audio VAE config: the per-channel statistics have ch={cfg.ch} "
                                        f"entries but the latent has z_channels x latent mel bins = {cfg.z_channels} "
                                        f"x {cfg.latent_mel_bins} = {latent} features")
        return cfg
