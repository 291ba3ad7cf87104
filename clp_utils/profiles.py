"""Run profiles: how big each chapter runs, chosen by one papermill parameter.

- ``smoke``: tiny subsets and a few steps; the whole notebook chain in minutes (tests).
- ``cpu``: the default of ``make study``: sized for 2 CPU cores and about an hour.
- ``full``: every training query, both domains, 3 seeds, every extra; meant for a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from clp_utils.data import RetrievalDataset, load_squadshifts


@dataclass(frozen=True)
class Profile:
    """Sizes of one profile (``None`` means everything)."""

    name: str
    passages: int | None  # passages per split kept by ``RetrievalDataset.subset``
    ood_passages: int | None  # passages of the out-of-domain split (new_wiki)


PROFILES = {
    "smoke": Profile("smoke", passages=80, ood_passages=60),
    "cpu": Profile("cpu", passages=None, ood_passages=None),
    "full": Profile("full", passages=None, ood_passages=None),
}


def get_profile(name: str) -> Profile:
    """The named profile; an unknown name lists the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {list(PROFILES)}") from None


def load_split(split: str, profile: str | Profile, ood: bool = False, seed: int = 0) -> RetrievalDataset:
    """Load a SQuADShifts split at the size the profile asks for."""
    p = get_profile(profile) if isinstance(profile, str) else profile
    ds = load_squadshifts(split)
    n = p.ood_passages if ood else p.passages
    return ds.subset(n, seed) if n is not None and n < len(ds.corpus) else ds
