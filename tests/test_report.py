"""Tests for `RobustnessReport`: JSON round trip, Markdown tables and summary."""
import json
import math

import numpy as np
import pytest

from gfa_keras.evaluation.report import (
    RobustnessReport, format_number, format_percent, json_ready, markdown_table, robustness_tables,
)


def make_report():
    return RobustnessReport(
        clean_accuracy=0.75,
        eps=[0.1, 0.2],
        norm="linf",
        attacks=["apgd_ce", "square"],
        robust_accuracy={"apgd_ce": [0.5, 0.25], "square": [0.5, 0.0]},
        attack_accuracy={"apgd_ce": [2 / 3, 1 / 3], "square": [1.0, 0.0]},
        worst_case_accuracy=[0.5, 0.0],
        broken_by=[["clean", "apgd_ce", None, None], ["clean", "apgd_ce", "apgd_ce", "square"]],
        minimum_norm={"deepfool": {"median": 0.1375, "mean": 0.1375, "success_rate": 2 / 3,
                                   "norms": [0.0, 0.125, 0.15, math.inf]}},
        settings={"model_name": "tiny", "num_points": 4, "eps": [0.1, 0.2], "steps": None},
        flags=[{"check": "black_box_not_stronger", "status": "warn", "reason": "square lowered it"}],
    )


def test_json_round_trip_keeps_every_field(tmp_path):
    report = make_report()
    path = tmp_path / "report.json"
    text = report.to_json(path)
    assert path.read_text() == text
    assert RobustnessReport.from_json(path) == report
    assert RobustnessReport.from_json(str(path)) == report
    assert RobustnessReport.from_json(text) == report


def test_json_is_strict_inf_becomes_null():
    data = json.loads(make_report().to_json(), parse_constant=lambda c: pytest.fail(f"non-standard {c}"))
    assert data["minimum_norm"]["deepfool"]["norms"] == [0.0, 0.125, 0.15, None]


def test_inf_median_survives_the_round_trip():
    report = make_report()
    report.minimum_norm["deepfool"]["median"] = math.inf
    assert RobustnessReport.from_json(report.to_json()).minimum_norm["deepfool"]["median"] == math.inf


def test_from_json_rejects_other_objects():
    with pytest.raises(ValueError, match=r"unknown fields \['loss'\]"):
        RobustnessReport.from_json(json.dumps({**make_report().to_dict(), "loss": 1.0}))


def test_robust_mask_reads_broken_by():
    assert make_report().robust_mask(0) == [False, False, True, True]
    assert make_report().robust_mask(1) == [False] * 4


def test_markdown_holds_the_numbers():
    text = make_report().to_markdown()
    assert "Clean accuracy: 75.00%" in text
    assert "| 0.1 | 50.00% | 50.00% | 50.00% |" in text
    assert "| 0.2 | 25.00% | 0.00% | 0.00% |" in text
    # apgd_ce at eps 0.2 was handed the 3 points not misclassified and broke 2.
    assert "| apgd_ce | 0.2 | 3 | 2 | 33.33% |" in text
    assert "| square | 0.2 | 1 | 1 | 0.00% |" in text
    assert "| deepfool | 0.1375 | 0.1375 | 66.67% |" in text
    assert "| black_box_not_stronger | warn | square lowered it |" in text
    assert "| model_name | tiny |" in text


def test_summary_is_one_line_with_worst_case_and_flags():
    summary = make_report().summary()
    assert "\n" not in summary
    assert "clean 75.00%" in summary and "0.1: 50.00%" in summary and "0.2: 0.00%" in summary
    assert "deepfool median linf norm 0.1375" in summary
    assert "black_box_not_stronger (warn)" in summary


def test_tables_are_one_source_for_markdown_and_the_dict_form():
    report = make_report()
    tables = robustness_tables(report)
    assert robustness_tables(report.to_dict()) == tables
    captions = [caption for caption, _, _ in tables]
    assert captions == ["Robust accuracy (cumulative cascade, all points)",
                        "Per attack: accuracy on the points still robust before it",
                        "Budgets: each attack's options as run",
                        "Minimum-norm attacks (linf)", "Gradient-masking checks", "Settings"]
    assert tables[2][2] == [["AutoAttack standard version", "not recorded"], ["points evaluated", "4"]]
    markdown = report.to_markdown()
    for caption, header, rows in tables:
        assert "\n".join(markdown_table(header, rows)) in markdown
    # The failed deepfool run (inf) keeps the median's text after the JSON round trip.
    assert tables[3][2][0][1] == "0.1375"


def test_number_formatting_and_json_cleaning():
    assert format_percent(None) == "n/a" and format_percent(0.12345) == "12.35%"
    assert format_number(math.inf) == "inf" and format_number(0.123456) == "0.1235" and format_number(3) == "3"
    assert json_ready({"a": np.float32(0.5), "b": [np.inf, np.int64(2)], "c": np.arange(2)}) == \
        {"a": 0.5, "b": [None, 2], "c": [0, 1]}
    assert markdown_table(["a|b"], [["x"]]) == ["| a\\|b |", "|---|", "| x |"]


def test_budgets_and_standardness_are_in_every_rendering():
    report = make_report()
    report.settings["budgets"] = {"apgd_ce": {"steps": 100, "restarts": 1}, "square": {"steps": 1000, "p_init": 0.8}}
    report.standard, report.standard_reasons = False, ["attacks apgd_ce, square instead of apgd_ce, apgd_t, "
                                                       "fab_t, square", "square: 1000 queries < 5000"]
    markdown = report.to_markdown()
    assert "| apgd_ce | steps=100, restarts=1 |" in markdown and "| square | steps=1000, p_init=0.8 |" in markdown
    assert "| AutoAttack standard version | no: attacks apgd_ce, square instead of" in markdown
    assert "| budgets |" not in markdown  # shown once, in its own table
    assert "not the AutoAttack standard version (attacks apgd_ce" in report.summary()
    again = RobustnessReport.from_json(report.to_json())
    assert again.standard is False and again.standard_reasons == report.standard_reasons
    report.standard, report.standard_reasons = True, []
    assert "; AutoAttack standard version;" in report.summary()
