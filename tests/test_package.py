"""The package's shape: a light `import gfa_keras`, imports that only point down, and
`.keras` files saved before the layout moved still loading."""
import ast
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

import gfa_keras

PACKAGE = pathlib.Path(gfa_keras.__file__).parent
FIXTURES = pathlib.Path(__file__).parent / "fixtures"

# Each part of the package and the parts it may import (besides itself).
ALLOWED = {
    "validation": set(),
    "threat_model": set(),
    "atomic_files": set(),
    "lazy_imports": set(),
    "data": {"validation"},
    "augmentation": {"validation"},
    "architectures": {"validation"},
    "training": {"atomic_files", "validation", "threat_model"},
    "attacks": {"validation", "threat_model"},
    "evaluation": {"atomic_files", "lazy_imports", "validation", "threat_model", "attacks"},
    "reports": {"atomic_files", "validation", "evaluation"},
    "tuning": {"atomic_files", "validation", "threat_model", "training", "attacks", "evaluation", "reports"},
    "cli": {"atomic_files", "validation", "threat_model", "training", "attacks", "evaluation", "reports", "tuning",
            "data", "architectures"},
}


def _part(module_path):
    relative = module_path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def _imported_parts(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name.startswith("gfa_keras."):
                yield name.split(".")[1]


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_imports_point_down(part):
    files = [PACKAGE / f"{part}.py"] if (PACKAGE / f"{part}.py").exists() else sorted((PACKAGE / part).rglob("*.py"))
    assert files, f"no module for part {part}"
    wrong = {
        f"{path.relative_to(PACKAGE)} imports gfa_keras.{target}"
        for path in files
        for target in _imported_parts(path)
        if target != part and target in ALLOWED and target not in ALLOWED[part]
    }
    assert not wrong, sorted(wrong)


def test_every_module_belongs_to_a_known_part():
    parts = {_part(path) for path in PACKAGE.rglob("*.py")} - {"__init__", "__main__"}
    assert parts <= set(ALLOWED), sorted(parts - set(ALLOWED))


def test_import_does_not_load_the_tuner_the_attacks_or_the_reports():
    code = (
        "import sys, gfa_keras; "
        "print(sorted(m for m in ('keras_tuner', 'cleverhans', 'gfa_keras.attacks', 'gfa_keras.evaluation', "
        "'gfa_keras.reports', 'gfa_keras.tuning') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_lazy_names_resolve_to_their_modules():
    from gfa_keras.evaluation.cascade import evaluate_robustness
    from gfa_keras.tuning.search import tune

    assert gfa_keras.evaluate_robustness is evaluate_robustness
    assert gfa_keras.tune is tune
    assert set(gfa_keras.__all__) <= set(dir(gfa_keras))
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        gfa_keras.nonexistent
    import gfa_keras.evaluation as evaluation

    assert evaluation.evaluate_robustness is evaluate_robustness
    assert set(evaluation.__all__) <= set(dir(evaluation))
    with pytest.raises(AttributeError, match="'gfa_keras.evaluation' has no attribute 'nonexistent'"):
        evaluation.nonexistent


@pytest.mark.parametrize("name", ["gfa", "hybrid", "trades"])
def test_keras_files_saved_by_0_1_0_load(name):
    expected = np.load(FIXTURES / "v0_1_0_predictions.npz")
    model = keras.models.load_model(FIXTURES / f"{name}_v0_1_0.keras")
    assert isinstance(model, gfa_keras.HardenedModel)
    np.testing.assert_allclose(model.predict(expected["x"], verbose=0), expected[name], rtol=1e-5, atol=1e-6)
    if name == "gfa":
        assert isinstance(model, gfa_keras.GFAModel)
        assert len(model.tapped_layers) == 3
