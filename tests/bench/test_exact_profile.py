"""``python -m bench.exact_profile``: the exact stage's CPU charged per party and round."""

from __future__ import annotations

from bench.exact_profile import profile
from pura.protocols import identify as ident


def test_profile_charges_both_parties_and_projects_b_known() -> None:
    original = ident.helper_blinded_product
    out = profile("fast", 40, 1, b_known=True)
    assert ident.helper_blinded_product is original  # the timing wrappers are removed again
    charged = out["cpu_per_query_s"]
    assert charged["A distance: partial decryptions of the stream"] > 0.0
    assert charged["B distance: partial decryptions + products"] > 0.0
    assert out["a_s"] > 0.0 and out["b_s"] > 0.0
    assert out["queries_timed"] == 2 and out["b_known_projection"] is True  # + a non-mated one
