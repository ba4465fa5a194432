"""The ``fastltx`` command line: inspect checkpoints, write tiny random checkpoints."""

import argparse
import sys

from fastltx.checkpoint.safetensors_file import CheckpointError


def _inspect(args) -> None:
    from fastltx.checkpoint.inspect import inspect_checkpoint
    print(inspect_checkpoint(args.path))


def _tiny(args) -> None:
    from fastltx.checkpoint.factory import make_checkpoint
    path = make_checkpoint(args.path, version=args.version, seed=args.seed, num_layers=args.layers)
    print(f"wrote a random {args.version} checkpoint to {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastltx", description="Fast, faithful LTX-2 inference.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="print the model version and components of a checkpoint")
    p.add_argument("path", help="an official single-file .safetensors checkpoint")
    p.set_defaults(run=_inspect)
    p = sub.add_parser("tiny", help="write a tiny random checkpoint in the official layout")
    p.add_argument("path")
    p.add_argument("--version", choices=("v1", "v2"), default="v1", help="v1: LTX-2 numerics, v2: LTX-2.3")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", type=int, default=None, help="number of transformer blocks (default 2)")
    p.set_defaults(run=_tiny)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except CheckpointError as e:
        print(f"fastltx: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
