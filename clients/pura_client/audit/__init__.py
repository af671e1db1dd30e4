"""``pura-audit``: privacy-attack evaluations of Pura on real LFW faces, with HTML reports.

Modules: ``metrics`` (DET, FNIR@FPIR, rule of three, Gomez-Barrero D↔(s)/D↔sys, χ²), ``report``
(JSON + HTML), ``data`` (audit roles, system threshold), one module per evaluation —
``inversion``, ``linkability``, ``probing``, ``impersonation``, ``parity``, ``leakage`` — and
``views`` (``pura-audit views``: real ``pura serve`` processes with ``--record``;
``recordings`` reads what they wrote, ``view_attacks`` attacks it, ``recorded`` loads one run
for the evaluations that read a server's view). ``cli`` holds the typer ``app``. There is no
in-process copy of the servers: every server view the audit measures was recorded by a real
``pura serve`` process.
"""

from __future__ import annotations

__all__: list[str] = []
