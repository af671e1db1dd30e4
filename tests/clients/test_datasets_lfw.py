"""LFW listing, View 2 parsing and the seeded identification split, on the real data."""

from __future__ import annotations

from pathlib import Path

import pytest
from pura_client.datasets.lfw import LFWDataset, identification_split, locate_lfw

from pura.errors import ConfigError


def test_missing_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="LFW not found"):
        locate_lfw(tmp_path)


def test_env_var_points_at_the_data(
    monkeypatch: pytest.MonkeyPatch, lfw_dataset: LFWDataset, tmp_path: Path
) -> None:
    monkeypatch.setenv("PURA_LFW_DIR", str(tmp_path))
    with pytest.raises(ConfigError):
        LFWDataset.open()
    monkeypatch.setenv("PURA_LFW_DIR", str(lfw_dataset.root))
    assert LFWDataset.open().root == lfw_dataset.root


def test_people_counts_match_the_published_totals(lfw_dataset: LFWDataset) -> None:
    people = lfw_dataset.people()
    assert len(people) == 5749
    assert sum(people.values()) == 13233
    assert sum(1 for c in people.values() if c >= 2) == 1680
    assert people["George_W_Bush"] == 530


def test_view2_pairs_have_ten_balanced_folds(lfw_dataset: LFWDataset) -> None:
    folds = lfw_dataset.pairs()
    assert [len(f) for f in folds] == [600] * 10
    for fold_index, fold in enumerate(folds):
        assert sum(p.same for p in fold) == 300
        assert all(p.fold == fold_index for p in fold)
        assert all((p.first.label == p.second.label) == p.same for p in fold)
    first = folds[0][0]
    assert (first.first.label, first.first.index, first.second.index) == ("Abel_Pacheco", 1, 4)
    assert first.first.path.is_file()


def test_people_folds_are_disjoint(lfw_dataset: LFWDataset) -> None:
    folds = lfw_dataset.people_folds()
    assert len(folds) == 10
    names = [name for fold in folds for name, _ in fold]
    assert len(names) == len(set(names))
    counts = lfw_dataset.people()
    assert all(counts[name] == n for fold in folds for name, n in fold)


def test_missing_image_is_reported(lfw_dataset: LFWDataset) -> None:
    with pytest.raises(ConfigError, match="#9999"):
        lfw_dataset.image_path("George_W_Bush", 9999)
    with pytest.raises(ConfigError, match="unknown"):
        lfw_dataset.images_of("Nobody_Atall")


def test_identification_split_is_seeded_and_consistent(lfw_dataset: LFWDataset) -> None:
    split = identification_split(50, seed=7, n_non_enrolled=20, dataset=lfw_dataset)
    again = identification_split(50, seed=7, n_non_enrolled=20, dataset=lfw_dataset)
    other = identification_split(50, seed=8, n_non_enrolled=20, dataset=lfw_dataset)
    assert split == again
    assert split.gallery != other.gallery
    enrolled = {g.label for g in split.gallery}
    assert len(enrolled) == 50 and all(g.index == 1 for g in split.gallery)
    assert all(p.label in enrolled and p.index >= 2 for p in split.probes)
    people = lfw_dataset.people()
    assert len(split.probes) == sum(people[name] - 1 for name in enrolled)
    assert len(split.non_enrolled) == 20
    assert not {n.label for n in split.non_enrolled} & enrolled
    assert split.used_people == enrolled | {n.label for n in split.non_enrolled}


def test_identification_split_caps_probes(lfw_dataset: LFWDataset) -> None:
    split = identification_split(
        300, seed=1, n_non_enrolled=0, max_probes_per_identity=1, dataset=lfw_dataset
    )
    assert len(split.probes) == 300
    assert split.non_enrolled == ()


@pytest.mark.parametrize("n", [0, -1, 1681])
def test_identification_split_rejects_bad_sizes(lfw_dataset: LFWDataset, n: int) -> None:
    with pytest.raises(ConfigError, match="n_identities"):
        identification_split(n, dataset=lfw_dataset)


def test_a_clone_away_from_shared_still_finds_lfw(
    monkeypatch: pytest.MonkeyPatch, lfw_dataset: LFWDataset
) -> None:
    """A checkout made anywhere (``mktemp -d``) falls back to the machine's shared data folder."""
    import pura_client.datasets.lfw as lfw

    monkeypatch.delenv("PURA_LFW_DIR", raising=False)
    monkeypatch.setattr(lfw, "_FALLBACK_DIRS", (Path("/nonexistent/shared/data/lfw"),
                                                lfw_dataset.root))
    assert lfw.default_lfw_dir() == lfw_dataset.root.resolve()
    monkeypatch.setattr(lfw, "_FALLBACK_DIRS", (Path("/nonexistent/a"), Path("/nonexistent/b")))
    with pytest.raises(ConfigError, match="LFW not found: /nonexistent/a"):
        locate_lfw()
