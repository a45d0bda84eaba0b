"""benchmarks/fit_return_stall.py: it times both pipelines in the same rounds and prints their table."""
import importlib.util
import re
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fit_return_stall.py"
spec = importlib.util.spec_from_file_location("fit_return_stall_benchmark", SCRIPT)
bench = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bench
spec.loader.exec_module(bench)


def test_both_pipelines_run_every_round_and_the_ratios_come_from_their_medians(capsys):
    bench.main(["--method", "standard", "--batches", "2", "--rounds", "2"])
    out = capsys.readouterr().out
    rows = {}
    for name in ("arrays", "as_tf_dataset"):
        row = re.search(rf"^\| {name} \| ([\d.]+) \| ([\d.]+) / ([\d.]+) \| (\d) of 2 \| ([\d.]+) \|$", out, re.M)
        assert row, out
        rows[name] = [float(v) for v in row.groups()]
        epoch, stall_median, stall_max, _, call = rows[name]
        assert 0 < epoch <= call and stall_median <= stall_max
    assert len(re.findall(r"^round \d/2: arrays call [\d.]+s .*; as_tf_dataset call", out, re.M)) == 2
    ratio = float(re.search(r"epoch ([\d.]+)x", out).group(1))
    assert abs(ratio - rows["as_tf_dataset"][0] / rows["arrays"][0]) < 0.02
