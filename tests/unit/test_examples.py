"""examples/: one script per registered pipeline, each valid Python naming its pipeline; the demo
set supplies the LoRA the ic-lora pipeline needs. (Running them is left to the pipeline tests: on
the demo model each does what tests/parity exercises.)"""

import ast
from pathlib import Path

from fastltx.checkpoint.safetensors_file import read_header
from fastltx.pipelines import PIPELINES
from fastltx.pipelines.demo import demo_loras

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_one_example_per_pipeline():
    for name in PIPELINES:
        path = EXAMPLES / f"{name.replace('-', '_')}.py"
        tree = ast.parse(path.read_text(), str(path))  # a syntax error fails here
        loads = [n for n in ast.walk(tree)
                 if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "load_pipeline"]
        assert [c.args[0].value for c in loads] == [name], path


def test_demo_loras(tmp_path):
    assert demo_loras(tmp_path, "distilled") == []
    [(path, strength)] = demo_loras(tmp_path, "ic-lora")
    assert strength == 1.0 and read_header(path).metadata["reference_downscale_factor"] == "1"
