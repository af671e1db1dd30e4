"""SearchConfig owns the search defaults; bad values are refused at construction."""

from __future__ import annotations

import pytest

from pura.errors import ConfigError
from pura.pipeline import DEFAULT_TOP_K, DEFAULT_VIEW_K, SearchConfig
from pura.protocols.identify import threshold_units


def test_defaults_are_the_measured_ones() -> None:
    config = SearchConfig()
    assert (config.top_k, config.view_k) == (DEFAULT_TOP_K, DEFAULT_VIEW_K) == (6, 256)
    assert config.tau_units(11) == threshold_units(0.115, 11)


@pytest.mark.parametrize("kwargs", [{"top_k": 0}, {"top_k": 8, "view_k": 4}, {"tau": 0.0},
                                    {"tau": 4.5}])
def test_invalid_values_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        SearchConfig(**kwargs)  # type: ignore[arg-type]
