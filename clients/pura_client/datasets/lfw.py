"""Labeled Faces in the Wild (deep-funneled) read from disk, plus the splits Pura evaluates on.

Where the data lives: ``$PURA_LFW_DIR`` if set, else ``<repo>/../shared/data/lfw`` or
``/work/shared/data/lfw`` (see
``/work/shared/data/README.md``). The folder holds ``lfw-deepfunneled/<Name>/<Name>_NNNN.jpg``
(``NNNN`` is the 1-based image number), ``pairs.txt`` (View 2) and ``people.txt``.

Public API (used by tests, benchmarks and ``pura-eval``)::

    ds = LFWDataset.open()                    # ConfigError if the folder is missing
    ds.people()                               # {name: image count}, sorted by name
    ds.image_path("George_W_Bush", 10)        # Path to George_W_Bush_0010.jpg
    ds.pairs()                                # 10 folds of 600 Pair (300 same, 300 different)
    ds.people_folds()                         # 10 person-disjoint folds of (name, count)
    split = identification_split(500, seed=0) # gallery / mated probes / non-enrolled probes

The identification split is the 1:N protocol of issue 3: among people with at least two images,
``n_identities`` are drawn (seeded); the *first* image of each is enrolled, the other images are
mated probes; non-enrolled probes come from people who are not in the gallery (one image each).
Everything is deterministic for a given seed so separate processes (tests, benchmarks, the
embedding cache) agree on the same images without exchanging lists.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pura.errors import ConfigError

ENV_VAR = "PURA_LFW_DIR"
IMAGES_DIR = "lfw-deepfunneled"
_REPO_ROOT = Path(__file__).resolve().parents[3]


#: Tried in order when ``$PURA_LFW_DIR`` is unset: beside the checkout (development), then the
#: machine's shared data folder, so that a clone made anywhere (``mktemp -d``) finds the data,
#: as :func:`pura_client.embedding.registry.models_dir` finds the weights.
_FALLBACK_DIRS = (_REPO_ROOT / ".." / "shared" / "data" / "lfw", Path("/work/shared/data/lfw"))


def default_lfw_dir() -> Path:
    """``$PURA_LFW_DIR``, else the first of ``<repo>/../shared/data/lfw`` and
    ``/work/shared/data/lfw`` that holds LFW, else the first (reported as missing)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    for candidate in _FALLBACK_DIRS:
        if (candidate / IMAGES_DIR).is_dir():
            return candidate.resolve()
    return _FALLBACK_DIRS[0].resolve()


def locate_lfw(root: Path | str | None = None) -> Path:
    """Return the LFW folder, or raise :class:`ConfigError` saying where it was looked for."""
    path = Path(root).expanduser() if root is not None else default_lfw_dir()
    if not (path / IMAGES_DIR).is_dir():
        raise ConfigError(
            f"LFW not found: {path} has no {IMAGES_DIR}/ folder (set {ENV_VAR} to the LFW folder)"
        )
    return path


@dataclass(frozen=True, order=True)
class LabeledImage:
    """One image of one person: ``label`` is the LFW name, ``index`` its 1-based number."""

    label: str
    index: int
    path: Path = field(compare=False)


@dataclass(frozen=True)
class Pair:
    """One View 2 pair. ``same`` is the ground truth (with LFW's known label errors kept)."""

    fold: int
    first: LabeledImage
    second: LabeledImage
    same: bool


@dataclass(frozen=True)
class IdentificationSplit:
    """A 1:N evaluation set: one enrolled image per identity, mated and non-enrolled probes.

    ``gallery[i].label`` is the subject id to enrol; a probe is *mated* when its label is in
    the gallery. ``non_enrolled`` probes belong to people absent from the gallery, so the correct
    answer for them is "no match" (they measure FPIR).
    """

    gallery: tuple[LabeledImage, ...]
    probes: tuple[LabeledImage, ...]
    non_enrolled: tuple[LabeledImage, ...]

    @property
    def used_people(self) -> frozenset[str]:
        """Every person appearing in the split (e.g. to keep a PCA fit disjoint from it)."""
        items = (*self.gallery, *self.probes, *self.non_enrolled)
        return frozenset(item.label for item in items)


class LFWDataset:
    """Read-only view of an LFW folder. Cheap to construct; listings are computed lazily."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._people: dict[str, int] | None = None

    @classmethod
    def open(cls, root: Path | str | None = None) -> LFWDataset:
        """Open LFW at ``root`` (default: :func:`default_lfw_dir`); ConfigError if absent."""
        return cls(locate_lfw(root))

    def __repr__(self) -> str:
        return f"LFWDataset(root={str(self.root)!r})"

    def people(self) -> dict[str, int]:
        """``{name: number of images}`` for every person, sorted by name (from the folders)."""
        if self._people is None:
            counts: dict[str, int] = {}
            for person_dir in sorted((self.root / IMAGES_DIR).iterdir()):
                if person_dir.is_dir():
                    counts[person_dir.name] = sum(1 for _ in person_dir.glob("*.jpg"))
            self._people = counts
        return dict(self._people)

    def image_path(self, name: str, index: int) -> Path:
        """Path of image ``index`` (1-based) of ``name``; ConfigError if it does not exist."""
        path = self.root / IMAGES_DIR / name / f"{name}_{index:04d}.jpg"
        if not path.is_file():
            raise ConfigError(f"LFW image missing: {name} #{index} (expected {path})")
        return path

    def image(self, name: str, index: int) -> LabeledImage:
        """The :class:`LabeledImage` for image ``index`` of ``name``."""
        return LabeledImage(name, index, self.image_path(name, index))

    def images_of(self, name: str) -> list[LabeledImage]:
        """All images of one person, in LFW order."""
        count = self.people().get(name)
        if count is None:
            raise ConfigError(f"unknown LFW person: {name!r}")
        return [self.image(name, i) for i in range(1, count + 1)]

    def all_images(self) -> Iterator[LabeledImage]:
        """Every image of the data set, sorted by person then number."""
        for name in self.people():
            yield from self.images_of(name)

    def pairs(self, filename: str = "pairs.txt") -> list[list[Pair]]:
        """View 2 pairs grouped by fold (``pairs.txt``: header ``folds n`` then 2n lines a fold)."""
        lines = _read_lines(self.root / filename)
        n_folds, per_half = _parse_header(lines[0], filename)
        body = lines[1:]
        if len(body) != n_folds * 2 * per_half:
            raise ConfigError(
                f"{filename}: expected {n_folds * 2 * per_half} pair lines, found {len(body)}"
            )
        folds: list[list[Pair]] = []
        for fold in range(n_folds):
            chunk = body[fold * 2 * per_half : (fold + 1) * 2 * per_half]
            folds.append([self._parse_pair(fold, line, filename) for line in chunk])
        return folds

    def people_folds(self, filename: str = "people.txt") -> list[list[tuple[str, int]]]:
        """The person-disjoint folds of ``people.txt`` (``folds`` then per fold a count + names)."""
        lines = _read_lines(self.root / filename)
        n_folds = _parse_int(lines[0], filename)
        folds: list[list[tuple[str, int]]] = []
        pos = 1
        for _ in range(n_folds):
            size = _parse_int(lines[pos], filename)
            entries = [_split(line, 2, filename) for line in lines[pos + 1 : pos + 1 + size]]
            folds.append([(name, _parse_int(count, filename)) for name, count in entries])
            pos += 1 + size
        return folds

    def _parse_pair(self, fold: int, line: str, filename: str) -> Pair:
        parts = line.split()
        if len(parts) == 3:
            name, a, b = parts
            first, second = self.image(name, int(a)), self.image(name, int(b))
            return Pair(fold, first, second, same=True)
        if len(parts) == 4:
            n1, a, n2, b = parts
            return Pair(fold, self.image(n1, int(a)), self.image(n2, int(b)), same=False)
        raise ConfigError(f"{filename}: malformed pair line with {len(parts)} fields")


def identification_split(
    n_identities: int,
    seed: int = 0,
    *,
    n_non_enrolled: int = 200,
    max_probes_per_identity: int | None = None,
    dataset: LFWDataset | None = None,
) -> IdentificationSplit:
    """Draw a deterministic 1:N split of LFW (see the module docstring).

    ``max_probes_per_identity`` caps the mated probes of prolific people (George W Bush has 530
    images) so that the probe set is not dominated by a handful of identities and stays cheap to
    embed. Raises :class:`ConfigError` when LFW has too few people for the request.
    """
    ds = dataset if dataset is not None else LFWDataset.open()
    people = ds.people()
    rng = random.Random(seed)
    multi = [name for name, count in people.items() if count >= 2]
    if not 0 < n_identities <= len(multi):
        raise ConfigError(f"n_identities must be in 1..{len(multi)}, got {n_identities}")
    enrolled = sorted(rng.sample(multi, n_identities))
    gallery = tuple(ds.image(name, 1) for name in enrolled)
    probes: list[LabeledImage] = []
    for name in enrolled:
        last = people[name]
        if max_probes_per_identity is not None:
            last = min(last, 1 + max_probes_per_identity)
        probes.extend(ds.image(name, i) for i in range(2, last + 1))
    enrolled_set = set(enrolled)
    outsiders = [name for name in people if name not in enrolled_set]
    if not 0 <= n_non_enrolled <= len(outsiders):
        raise ConfigError(f"n_non_enrolled must be in 0..{len(outsiders)}, got {n_non_enrolled}")
    chosen = sorted(rng.sample(outsiders, n_non_enrolled))
    non_enrolled = tuple(ds.image(name, rng.randint(1, people[name])) for name in chosen)
    return IdentificationSplit(gallery, tuple(probes), non_enrolled)


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise ConfigError(f"LFW protocol file missing: {path}")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line]


def _split(line: str, n: int, filename: str) -> list[str]:
    parts = line.split()
    if len(parts) != n:
        raise ConfigError(f"{filename}: expected {n} fields, found {len(parts)}")
    return parts


def _parse_int(text: str, filename: str) -> int:
    try:
        return int(text)
    except ValueError as exc:
        raise ConfigError(f"{filename}: expected an integer, found {len(text)} characters") from exc


def _parse_header(line: str, filename: str) -> tuple[int, int]:
    a, b = _split(line, 2, filename)
    return _parse_int(a, filename), _parse_int(b, filename)
