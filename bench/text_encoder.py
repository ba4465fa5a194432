"""Text encoding at full size on the GPU: Gemma 3 12B + the LTX-2 text projection and connectors.

Random bf16 weights (no hub, no files): Gemma 3 12B is built from its config on meta and
materialised on the GPU; the feature extractor and both connectors at the released geometry
(``--version v1``: LTX-2, ``v2``: LTX-2.3 numerics). A guidance step's positive and negative prompts
are encoded, padded to 1,024 tokens, by:

* ltx-core 1.0.0 as its pipelines do (``encode_prompts``): ``GemmaTextEncoder.encode`` (the whole
  Gemma3ForConditionalGeneration: vision tower and lm_head included) once per prompt, then
  ``EmbeddingsProcessor.process_hidden_states`` once per prompt;
* fastltx: the language model only, both prompts in one batch.

Both sides run on the very same weight tensors (our language model and processor share the
reference's parameters) and the same tokenizer (the factory's small character-level one: token ids
differ from Gemma's but the sequence is padded to 1,024 all the same). Prints the card, median
times, peak memory above the weights, the weights each side holds, and the relative L2 difference
of the outputs.

    python bench/text_encoder.py [--version v1|v2] [--reps 5]
"""

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import peak_mib, rel_l2, time_cuda  # noqa: E402
from fastltx.checkpoint.factory import random_state  # noqa: E402
from fastltx.models.text_encoder import GemmaEncoder, TextEncoder, TextProcessor  # noqa: E402
from fastltx.models.text_encoder.gemma import (MAX_LENGTH, build_language_model, load_tokenizer,  # noqa: E402
                                               parameters_on_meta)
from fastltx.models.text_encoder.tiny import gemma_config, text_config, write_tokenizer  # noqa: E402

POSITIVE = ("a woman with short grey hair walks along a windswept beach at dusk, the camera tracking beside her "
            "at shoulder height. waves break behind her in slow white lines and the low sun lights the spray. "
            "she stops, turns toward the sea and pulls her coat tighter as gulls call overhead. the sound of the "
            "surf is loud and steady, with wind gusting across the microphone. the shot ends on her face, calm, "
            "eyes half closed against the light.")
NEGATIVE = ("worst quality, inconsistent motion, blurry, jittery, distorted, watermark, text, subtitles, low "
            "resolution, oversaturated, static frame, deformed hands, extra limbs, muffled audio, clipping, hum")


def unique_bytes(module: torch.nn.Module) -> int:
    seen, total = set(), 0
    for t in [*module.parameters(), *module.buffers()]:
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def reference_gemma(seed: int):
    """Gemma3ForConditionalGeneration 12B on the GPU with random bf16 weights, buffers as transformers makes them,
    the lm_head tied to the embedding as the reference's loader ties it."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration
    with parameters_on_meta():
        model = Gemma3ForConditionalGeneration(Gemma3Config.from_dict(gemma_config("19b")))
    state = random_state(model, seed, device="cuda", dtype=torch.bfloat16)
    state["lm_head.weight"] = state["model.language_model.embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    return model.to("cuda").eval().requires_grad_(False)


def processors(version: str, seed: int):
    """Our TextProcessor at the released geometry and ltx-core's EmbeddingsProcessor sharing its tensors."""
    from fastltx.checkpoint.factory import connector_keys, transformer_config
    from ltx_core.text_encoders.gemma import EmbeddingsProcessorConfigurator
    with torch.device("meta"):
        ours = TextProcessor(text_config(version, "19b"))
    state = random_state(ours, seed, device="cuda", dtype=torch.bfloat16)
    state = {k: (t.float() * 10).to(t.dtype) if k.endswith("learnable_registers") else t for k, t in state.items()}
    ours.load_state_dict(state, strict=True, assign=True)
    section = transformer_config(version, "19b").to_checkpoint_section(connector_keys(version, "19b"))
    with torch.device("meta"):
        ref = EmbeddingsProcessorConfigurator.from_config({"transformer": section})
    ref.load_state_dict(ours.state_dict(), strict=True, assign=True)
    return ours.eval(), ref.eval()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--version", choices=("v1", "v2"), default="v1")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    card = torch.cuda.get_device_name()
    import transformers
    print(f"card: {card}, torch {torch.__version__}, transformers {transformers.__version__}")

    from ltx_core.text_encoders.gemma import GemmaTextEncoder
    from ltx_core.text_encoders.gemma.tokenizer import LTXVGemmaTokenizer
    tokenizer_dir = write_tokenizer(Path(tempfile.mkdtemp()) / "tokenizer")
    full = reference_gemma(seed=0)
    ref_encoder = GemmaTextEncoder(model=full, tokenizer=LTXVGemmaTokenizer(str(tokenizer_dir), MAX_LENGTH))
    ours_processor, ref_processor = processors(args.version, seed=1)
    language_model = build_language_model(full.config.text_config, full.model.language_model.state_dict(), "cuda")
    ours = TextEncoder(GemmaEncoder(language_model, load_tokenizer(tokenizer_dir), MAX_LENGTH), ours_processor)
    vision = sum(p.numel() for n, p in full.named_parameters() if "vision_tower" in n or "multi_modal_projector" in n)
    assert not any("vision" in n or "lm_head" in n for n, _ in ours.named_parameters())
    print(f"weights held: fastltx {unique_bytes(ours) / 2**30:.2f} GiB (language model + projection + connectors), "
          f"ltx-core {(unique_bytes(full) + unique_bytes(ref_processor)) / 2**30:.2f} GiB (of which vision tower "
          f"and projector {vision / 1e6:.0f} M parameters, {vision * 2 / 2**30:.2f} GiB; fastltx holds none)")

    prompts = [POSITIVE, NEGATIVE]

    def run_ours():
        return ours.encode(prompts)

    def run_ref():
        raw = [ref_encoder.encode(p) for p in prompts]
        return [ref_processor.process_hidden_states(hs, mask) for hs, mask in raw]

    with torch.inference_mode():
        o, r = run_ours(), run_ref()
        errs = [(rel_l2(o[i].video, r[i].video_encoding), rel_l2(o[i].audio, r[i].audio_encoding)) for i in range(2)]
        lengths = ours.gemma.tokenize(prompts)[1].sum(dim=1).tolist()
        del o, r
        t_ours, t_ref = time_cuda(run_ours, reps=args.reps), time_cuda(run_ref, reps=args.reps)
        m_ours, m_ref = peak_mib(run_ours), peak_mib(run_ref)
    print(f"\nprompts: {lengths[0]} and {lengths[1]} tokens, padded to {MAX_LENGTH}; text path {args.version}")
    print(f"{'':>10} {'ms':>9} {'peak MiB':>9}")
    print(f"{'fastltx':>10} {t_ours:>9.1f} {m_ours:>9.0f}")
    print(f"{'ltx-core':>10} {t_ref:>9.1f} {m_ref:>9.0f}")
    print(f"ratio fastltx / ltx-core: time {t_ours / t_ref:.3f}, peak memory {m_ours / m_ref:.3f}")
    print("rel L2 vs ltx-core (video/audio): " + ", ".join(f"{v:.2e}/{a:.2e}" for v, a in errs) + f"  (card: {card})")


if __name__ == "__main__":
    main()
