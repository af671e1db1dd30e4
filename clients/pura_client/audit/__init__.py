"""``pura-audit``: privacy-attack evaluations of Pura on real LFW faces, with HTML reports.

Modules: ``metrics`` (DET, FNIR@FPIR, rule of three, Gomez-Barrero D↔(s)/D↔sys, χ²), ``report``
(JSON + HTML), ``data`` (audit roles, system threshold), one module per evaluation —
``inversion``, ``linkability``, ``probing``, ``impersonation``, ``parity``, ``leakage`` — plus
``protect`` (one deployment's keys and what A stores), ``harness`` (a recorded in-process
A/B deployment running the product's pipeline objects), and ``views`` (``pura-audit views``:
real ``pura serve`` processes with ``--record``; ``recordings`` reads what they wrote,
``view_attacks`` attacks it). ``cli`` holds the typer ``app``.
"""

from __future__ import annotations

__all__: list[str] = []
