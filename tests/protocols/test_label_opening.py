"""The winner's label opening (pura.protocols.candidates): A's half computed beside B's, and
B's answer bound to the label it served for the winner."""

from __future__ import annotations

import random
import threading

import pytest

from pura.crypto.paillier import Ciphertext, KeyShare, PublicKey, RandomnessPool, powmod_unlocked
from pura.errors import ProtocolError
from pura.protocols.candidates import finish_label, open_label

Keys = tuple[PublicKey, KeyShare, KeyShare]


def test_label_opens_with_a_partial_computed_ahead(paillier_fast_keys: Keys) -> None:
    pk, s1, s2 = paillier_fast_keys
    pool = RandomnessPool(pk, rng=random.Random(1))
    served = [pk.encrypt(label, pool).to_bytes() for label in (41, 42, 43)]
    reply = open_label(s2, served[1])
    ahead = s1.partial_decrypt(Ciphertext.from_bytes(pk, served[1]))
    assert finish_label(s1, reply, served[1]) == 42
    assert finish_label(s1, reply, served[1], ahead) == 42


def test_b_cannot_answer_for_another_label(paillier_fast_keys: Keys) -> None:
    pk, s1, s2 = paillier_fast_keys
    pool = RandomnessPool(pk, rng=random.Random(2))
    winner, other = (pk.encrypt(v, pool).to_bytes() for v in (7, 8))
    with pytest.raises(ProtocolError, match="other than the one it served"):
        finish_label(s1, open_label(s2, other), winner)


def test_partial_decryptions_release_the_gil(paillier_fast_keys: Keys) -> None:
    """Two threads' exponentiations overlap (the label opening relies on it): the result is
    the same as with the GIL held, and the unlocking flag does not leak into the thread."""
    import gmpy2

    pk = paillier_fast_keys[0]
    base = pk.encrypt(5, RandomnessPool(pk, rng=random.Random(3))).value
    expected = gmpy2.powmod(base, 12345678901234567890, pk.n_squared)
    out: list[object] = []

    def work() -> None:
        out.append(powmod_unlocked(base, 12345678901234567890, pk.n_squared))
        out.append(gmpy2.get_context().allow_release_gil)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out.count(expected) == 2 and out.count(False) == 2
