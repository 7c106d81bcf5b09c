"""The ``semvec`` command line."""

from __future__ import annotations

import argparse
import sys

EXAMPLES = """examples:
  semvec demo                      train the demo CNN on the embedded digits (no download)
  semvec demo --epochs 3 --out /tmp/semvec_runs
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semvec",
        description="Readable neurons and portable knowledge for PyTorch Lightning.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo", help="run the embedded demo on scikit-learn's digits",
        description="Train a small CNN on scikit-learn's digits with the semantic vector "
        "callback, export its knowledge and print what its logit neurons learned.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    demo.add_argument("--out", default="semvec_runs", help="output folder (default semvec_runs)")
    demo.add_argument("--no-progress-bar", action="store_true", help="hide progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``semvec`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "demo":
        from lightning_semvec.demo import main as demo_main

        try:
            demo_main(epochs=args.epochs, out_dir=args.out, progress_bar=not args.no_progress_bar)
        except ValueError as err:
            print(f"semvec demo: error: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
