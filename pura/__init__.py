"""Pura: privacy-preserving face identification.

Clients embed and encrypt faces; two non-colluding servers (A, the evaluator, and B, the
decryption helper) match them over ciphertexts and answer only "match <id>" or "no match".
See ``docs/architecture.md`` for the layout and ``docs/security.md`` for what each party learns.
"""

from pura._version import __version__

__all__ = ["__version__"]
