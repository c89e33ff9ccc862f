"""Scripted partners (:mod:`.scripted`), partner pools (:mod:`.pool`), tournaments (:mod:`.tournament`)
and the synthetic corpus played by the partners (:mod:`.synthetic`).

A new scripted partner goes in :mod:`parley.agents.partners.scripted` and is registered there, so that
``make_partner(name)``, ``gymnasium.make("parley/Negotiation-v0", partner=name)``, tournaments and
the study app all find it.
"""

from __future__ import annotations

from parley.utils import lazy_exports

_EXPORTS = {
    "make_partner": "parley.agents.partners.scripted",
    "list_partners": "parley.agents.partners.scripted",
    "run_tournament": "parley.agents.partners.tournament",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports("parley.agents.partners", _EXPORTS)
