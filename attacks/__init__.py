"""parley.attacks: poisoning attacks, defenses and the attack benchmark.

The shared interfaces are importable from here: ``make_attack(name, **config).craft(scenario)``,
``make_attack_for(name, dataset, **config)``, ``list_attacks()``, ``make_defense(name, **config)`` and
``list_defenses()``. They are imported lazily so that ``import parley.attacks`` stays cheap.
"""

from __future__ import annotations

from parley.utils import lazy_exports

_EXPORTS = {
    "make_attack": "parley.attacks.base",
    "make_attack_for": "parley.attacks.base",
    "list_attacks": "parley.attacks.base",
    "Scenario": "parley.attacks.base",
    "Submission": "parley.attacks.base",
    "BudgetError": "parley.attacks.base",
    "make_defense": "parley.attacks.defenses",
    "list_defenses": "parley.attacks.defenses",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports("parley.attacks", _EXPORTS)
