"""Shared pytest fixtures (others may append fixtures below; keep each one documented).

Real LFW data (never copied into the repo) is found at ``$PURA_LFW_DIR`` or
``<repo>/../shared/data/lfw`` or ``/work/shared/data/lfw``; fixtures needing it skip cleanly when
it is absent. Descriptors go
through the on-disk cache (``$PURA_CACHE_DIR`` or ``~/.cache/pura``), so only the first run pays
the dlib cost (~3 min on 2 cores for the identification set); later runs load in about a second.

Fixtures:

``lfw_dataset`` (session) -> :class:`pura_client.datasets.lfw.LFWDataset`
    The LFW folder: ``.people()``, ``.image_path(name, n)``, ``.pairs()`` (10 View-2 folds).

``lfw_identification_set`` (session) -> ``EmbeddedIdentificationSet``
    (class in :mod:`pura_client.datasets.embedded`; build other sizes/seeds with
    ``embedded_identification_set(n_identities, seed, ...)`` from the same module).

    Real dlib descriptors (reference pipeline: HOG(+CNN fallback) → 5 landmarks → 150×150 chip →
    ResNet), **L2-normalised float64**, for a fixed seeded split (seed 0):

    * ``gallery`` (500, 128) and ``gallery_labels`` (500 distinct LFW names): the first image of
      500 people who have ≥ 2 images;
    * ``probes`` (~775, 128) and ``probe_labels``: up to 2 other images of each gallery person
      (mated probes; ``probe_labels[j] in gallery_labels``);
    * ``non_enrolled`` (200, 128) and ``non_enrolled_labels``: one image each of 200 people not in
      the gallery (correct answer: no match).

    ``model_id`` names the pipeline; ``dropped`` counts images with no face (0 here). With
    dlib's usual same-person threshold 0.6 on raw descriptors, the unit-norm equivalent is
    roughly a squared distance of 1.2–1.5; compute thresholds from the data, not from this text.
"""

from __future__ import annotations

import pytest
from pura_client.datasets.embedded import EmbeddedIdentificationSet, embedded_identification_set
from pura_client.datasets.lfw import LFWDataset, default_lfw_dir

from pura.crypto.paillier import KeyShare, PublicKey
from pura.errors import ConfigError


@pytest.fixture(scope="session")
def lfw_dataset() -> LFWDataset:
    """The LFW data set, or a skip saying where it was looked for."""
    try:
        return LFWDataset.open()
    except ConfigError:
        pytest.skip(f"LFW not available at {default_lfw_dir()} (set PURA_LFW_DIR)")


@pytest.fixture(scope="session")
def lfw_identification_set(lfw_dataset: LFWDataset) -> EmbeddedIdentificationSet:
    """500 enrolled identities, their mated probes and 200 non-enrolled probes (see above)."""
    return embedded_identification_set(
        n_identities=500, seed=0, n_non_enrolled=200, dataset=lfw_dataset
    )


# --- threshold Paillier keys (owner: crypto/protocols) ---------------------------------------
# ``paillier_fast_keys`` / ``paillier_default_keys`` (session) -> (PublicKey, share 1, share 2)
#     Real keys of the 2048-bit fast profile (~0.5 s) and of the 3072-bit default (~5 s, made
#     only by the tests that ask for it), from a seeded rng so failures reproduce.


@pytest.fixture(scope="session")
def paillier_fast_keys() -> tuple[PublicKey, KeyShare, KeyShare]:
    """(pk, share1, share2) for ``PAILLIER_2048_FAST``, generated once per session."""
    import random

    from pura.crypto.paillier import generate_keypair
    from pura.crypto.params import PAILLIER_2048_FAST

    return generate_keypair(PAILLIER_2048_FAST, random.Random(2048))


@pytest.fixture(scope="session")
def paillier_default_keys() -> tuple[PublicKey, KeyShare, KeyShare]:
    """(pk, share1, share2) for the 3072-bit default ``PAILLIER_3072``, generated once."""
    import random

    from pura.crypto.paillier import generate_keypair
    from pura.crypto.params import PAILLIER_3072

    return generate_keypair(PAILLIER_3072, random.Random(3072))


# --- client key pins (owner: client SDK) -----------------------------------------------------
# ``private_known_keys`` (autouse) points $PURA_KNOWN_KEYS at this test's own file.
#     Clients pin server keys on first use (pura_client.pins) in ~/.config/pura by default. Tests
#     start servers with fresh keys on reused loopback ports, so a shared pin file would make
#     one test's keys look like a key change to the next, and tests must not write to $HOME.


@pytest.fixture(autouse=True)
def private_known_keys(tmp_path_factory: pytest.TempPathFactory,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PURA_KNOWN_KEYS",
                       str(tmp_path_factory.mktemp("known-keys") / "known_keys.json"))
