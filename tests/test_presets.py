"""Tests for the presets and budgets: AutoAttack's standard version option by option, and the
reasons a run is not that version."""
import pytest

from gfa_keras.attacks import ATTACKS
from gfa_keras.evaluation.presets import (
    AUTOATTACK_STANDARD, PRESETS, attack_budgets, declared_options, resolve_attacks, standard_reasons,
)

STANDARD = resolve_attacks("autoattack", "linf")


def test_the_standard_table_is_the_reference_standard_version():
    # fra31/auto-attack, autoattack/autoattack.py: the APGD, FAB and Square constructors and
    # set_version("standard") for Linf / L2.
    assert AUTOATTACK_STANDARD == {
        "apgd_ce": {"steps": 100, "restarts": 1},
        "apgd_t": {"steps": 100, "restarts": 1, "num_target_classes": 9},
        "fab_t": {"steps": 100, "restarts": 1, "num_target_classes": 9, "alpha_max": 0.1, "eta": 1.05,
                  "beta": 0.9},
        "square": {"steps": 5000, "p_init": 0.8, "rescale_schedule": False},
    }
    assert PRESETS["autoattack"] == PRESETS["standard"] == tuple(AUTOATTACK_STANDARD)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_the_preset_runs_exactly_the_standard_version(norm):
    budgets = attack_budgets(resolve_attacks("standard", norm), preset="standard", num_classes=10)
    for name, wanted in AUTOATTACK_STANDARD.items():
        assert {k: budgets[name][k] for k in wanted} == wanted, name
    assert standard_reasons(list(budgets), budgets, norm, 10) == []


def test_budgets_start_from_each_attacks_own_options():
    assert declared_options(ATTACKS["pgd"]) == {"steps": 40, "step_size": None, "restarts": 1}
    budgets = attack_budgets(resolve_attacks("fast", "linf"), preset="fast", steps=7, restarts=3)
    assert budgets == {"pgd": {"steps": 7, "step_size": None, "restarts": 3}, "fgsm": {"steps": 7}}


def test_reduced_budgets_under_the_standard_name_are_allowed_but_not_standard():
    budgets = attack_budgets(STANDARD, preset="autoattack", steps={"fab_t": 50, "square": 1000}, num_classes=10)
    assert budgets["fab_t"]["steps"] == 50 and budgets["square"]["steps"] == 1000
    assert standard_reasons(list(budgets), budgets, "linf", 10) == ["fab_t: 50 steps < 100",
                                                                    "square: 1000 queries < 5000"]
    budgets = attack_budgets(STANDARD, preset="autoattack", steps=200, restarts=2, num_classes=10)
    assert "apgd_ce: 200 steps > 100" in standard_reasons(list(budgets), budgets, "linf", 10)
    assert "apgd_ce: restarts=2 (standard: 1)" in standard_reasons(list(budgets), budgets, "linf", 10)


def test_other_attack_lists_and_the_rescaled_square_schedule_are_not_standard():
    fast = attack_budgets(resolve_attacks("fast", "linf"), num_classes=10)
    assert standard_reasons(["pgd", "fgsm"], fast, "linf", 10) == [
        "attacks pgd, fgsm instead of apgd_ce, apgd_t, fab_t, square"]
    # The same names as a list get each attack's defaults: Square's schedule default is the standard one.
    budgets = attack_budgets(STANDARD, num_classes=10)
    assert standard_reasons(list(budgets), budgets, "linf", 10) == []
    budgets["square"]["rescale_schedule"] = True
    assert standard_reasons(list(budgets), budgets, "linf", 10) == [
        "square: rescale_schedule=True (standard: False)"]


def test_targets_are_capped_by_the_classes_without_making_the_run_non_standard():
    budgets = attack_budgets(STANDARD, preset="autoattack", num_classes=5)
    assert budgets["apgd_t"]["num_target_classes"] == budgets["fab_t"]["num_target_classes"] == 4
    assert standard_reasons(list(budgets), budgets, "linf", 5) == []
    budgets["apgd_t"]["num_target_classes"] = 3
    assert standard_reasons(list(budgets), budgets, "linf", 5) == ["apgd_t: 3 target classes < 4"]
