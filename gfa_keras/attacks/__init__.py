"""Adversarial attacks with one flat signature, registered by name in `ATTACKS`.

Owns the attacks: `base` (the signature, input checks, the registry), `_common` (the
shape every attack's code follows and the pieces written once), one module per attack
family. May import `gfa_keras.validation`, `gfa_keras.threat_model` and cleverhans;
never training, evaluation, tuning or reports. See `gfa_keras.attacks.base` for the
signature every attack follows.
"""
import importlib

from gfa_keras.attacks.base import *  # noqa: F401,F403
from gfa_keras.attacks.base import __all__ as _base_all

# Importing a module registers its attacks.
from gfa_keras.attacks.cleverhans_attacks import *  # noqa: F401,F403
from gfa_keras.attacks.apgd import *  # noqa: F401,F403
from gfa_keras.attacks.carlini_wagner import *  # noqa: F401,F403
from gfa_keras.attacks.spsa import *  # noqa: F401,F403
from gfa_keras.attacks.fab import *  # noqa: F401,F403
from gfa_keras.attacks.square import *  # noqa: F401,F403
from gfa_keras.attacks.deepfool import *  # noqa: F401,F403
from gfa_keras.attacks.ead import *  # noqa: F401,F403
from gfa_keras.attacks.one_pixel import *  # noqa: F401,F403

# Modules fetched by path: `from gfa_keras.attacks import spsa` would give the
# function `spsa` that the star import above bound over the module's name.
_ATTACK_MODULES = [
    importlib.import_module(f"gfa_keras.attacks.{module}")
    for module in (
        "cleverhans_attacks", "apgd", "carlini_wagner", "spsa", "fab",
        "square", "deepfool", "ead", "one_pixel",
    )
]

__all__ = list(_base_all) + [name for module in _ATTACK_MODULES for name in module.__all__]
