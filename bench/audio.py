"""Audio decode at full size: audio VAE decoder + vocoder, fastltx vs ltx-core, 5 s and 20 s of audio.

Random bf16 weights at the released geometry (LTX-2: 24 kHz HiFi-GAN; LTX-2.3: 16 kHz AMP vocoder +
48 kHz bandwidth extension). ltx-core runs on the very same weight tensors and latents, and our
waveform is checked against it (relative L2) so that speed never costs correctness. Prints the card,
median times (decoder, vocoder, both), the ratio fastltx / ltx-core and peak memory above the weights.

    python bench/audio.py [--reps 7] [--versions v1 v2] [--seconds 5 20]
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import peak_mib, rel_l2, time_cuda  # noqa: E402
from fastltx.checkpoint.tiny_audio import (audio_vae_config, random_audio_decoder, random_vocoder,  # noqa: E402
                                           vocoder_config)

LATENT_FRAMES_PER_SECOND = 25


def import_reference():
    """ltx-core's audio modules import torchaudio at module top; fall back to the tests' stand-in."""
    try:
        import torchaudio  # noqa: F401
    except Exception:  # noqa: BLE001
        from tests.parity.reference import install_torchaudio_stub
        install_torchaudio_stub()
    import ltx_core.model.audio_vae as audio_vae
    return audio_vae


def reference_on_weights(configurator, section: dict, ours: torch.nn.Module) -> torch.nn.Module:
    """An ltx-core model sharing our parameter tensors (its computed resampler filter moves to the card)."""
    with torch.device("meta"):
        ref = configurator.from_config(section)
    ref.load_state_dict(ours.state_dict(), strict=True, assign=True)
    return ref.to("cuda").eval().requires_grad_(False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--versions", nargs="+", default=["v1", "v2"])
    parser.add_argument("--seconds", nargs="+", type=float, default=[5.0, 20.0])
    args = parser.parse_args()
    card = torch.cuda.get_device_name()
    print(f"card: {card}, torch {torch.__version__}")
    core = import_reference()
    rows = []
    for version in args.versions:
        decoder = random_audio_decoder(version, "19b", seed=0, device="cuda")
        vocoder = random_vocoder(version, "19b", seed=1, device="cuda")
        ref_decoder = reference_on_weights(core.AudioDecoderConfigurator,
                                           {"audio_vae": audio_vae_config(version, "19b").to_checkpoint_section()},
                                           decoder)
        ref_vocoder = reference_on_weights(core.VocoderConfigurator,
                                           {"vocoder": vocoder_config(version, "19b").to_checkpoint_section()}, vocoder)
        weights = torch.cuda.memory_allocated() / 2**20
        for seconds in args.seconds:
            frames = round(seconds * LATENT_FRAMES_PER_SECOND)
            gen = torch.Generator(device="cuda").manual_seed(2)
            latent = torch.randn(1, 8, frames, 16, generator=gen, device="cuda", dtype=torch.bfloat16)
            with torch.inference_mode():
                mel_o, mel_r = decoder(latent), ref_decoder(latent)
                wav_o, wav_r = vocoder(mel_o), ref_vocoder(mel_r)
                errs = (rel_l2(mel_o, mel_r), rel_l2(wav_o, wav_r))
                samples = wav_o.shape[-1]
                t = {name: time_cuda(fn, reps=args.reps) for name, fn in (
                    ("dec_o", lambda: decoder(latent)), ("dec_r", lambda: ref_decoder(latent)),
                    ("voc_o", lambda: vocoder(mel_o)), ("voc_r", lambda: ref_vocoder(mel_r)),
                    ("all_o", lambda: vocoder(decoder(latent))), ("all_r", lambda: ref_vocoder(ref_decoder(latent))))}
                m_o = peak_mib(lambda: vocoder(decoder(latent)))
                m_r = peak_mib(lambda: ref_vocoder(ref_decoder(latent)))
            del mel_o, mel_r, wav_o, wav_r
            rows.append((version, seconds, vocoder.output_sampling_rate, samples, t, m_o, m_r, errs, weights))
        del decoder, vocoder, ref_decoder, ref_vocoder
        torch.cuda.empty_cache()

    print(f"\n{'model':>6} {'audio':>6} {'rate':>6} {'decoder ms o/r':>15} {'vocoder ms o/r':>16} "
          f"{'total ms o/r':>15} {'ratio':>6} {'peak MiB o/r':>13} {'weights MiB':>11} {'rel L2 mel/wave':>17}")
    for version, seconds, rate, samples, t, m_o, m_r, (e_mel, e_wav), weights in rows:
        name = {"v1": "LTX-2", "v2": "2.3"}[version]
        pair = lambda a, b: f"{t[a]:.1f}/{t[b]:.1f}"  # noqa: E731
        print(f"{name:>6} {seconds:>5.0f}s {rate:>6} {pair('dec_o', 'dec_r'):>15} {pair('voc_o', 'voc_r'):>16} "
              f"{pair('all_o', 'all_r'):>15} {t['all_o'] / t['all_r']:>6.3f} {f'{m_o:.0f}/{m_r:.0f}':>13} "
              f"{weights:>11.0f} {f'{e_mel:.1e}/{e_wav:.1e}':>17}")
    print(f"(bf16, batch 1, {samples} samples for the last row; card: {card})")


if __name__ == "__main__":
    main()
