"""Run files are strict JSON: NaN as null, infinities as "inf", read back as floats."""

import json
import math

import numpy as np
import pytest

from experiments.results import collect_rows
from experiments.sweep import SweepPoint
from privfed import jsonsafe
from privfed.config import load_config
from privfed.federated.history import History, RoundRecord
from privfed.run_summary import summarize
from privfed.rundir import run_name, run_problems, write_run


def strict_loads(text):
    """``json.loads`` that rejects NaN, Infinity and -Infinity, as JSON.parse or jq do."""

    def reject(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=reject)


def _history():
    """Round 1: every DP batch empty (NaN loss), noise multiplier 0 (infinite epsilon)."""
    return History([
        RoundRecord(round=1, clients=[0, 1], train_loss=math.nan, seconds=0.5, bytes_up=10,
                    bytes_down=20, test_loss=1.2, test_accuracy=0.5,
                    extra={"epsilon": math.inf, "delta": 1e-5, "grad": np.float32(-np.inf)}),
        RoundRecord(round=2, clients=[1], train_loss=0.7, seconds=0.25, bytes_up=5,
                    bytes_down=10, extra={"epsilon": math.inf, "delta": 1e-5}),
    ])


def test_strict_parser_rejects_python_default_output():
    with pytest.raises(ValueError, match="NaN"):
        strict_loads(json.dumps({"loss": math.nan}))


def test_to_json_safe_converts_nested_numpy_and_non_finite_values():
    value = {
        "a": [1.0, math.nan, (math.inf, -math.inf)],
        "b": {"c": np.float32("nan"), "d": np.array([1.5, np.inf, -np.inf])},
        "e": np.int64(3), "f": np.bool_(True), "g": "text", "h": None,
        np.int64(4): np.array([[np.nan, 2]]),
    }
    assert jsonsafe.to_json_safe(value) == {
        "a": [1.0, None, ["inf", "-inf"]],
        "b": {"c": None, "d": [1.5, "inf", "-inf"]},
        "e": 3, "f": True, "g": "text", "h": None,
        4: [[None, 2.0]],
    }
    safe = jsonsafe.to_json_safe(value)
    assert type(safe["e"]) is int and type(safe["f"]) is bool


def test_dumps_is_strict_and_loads_restores_infinities():
    value = {"eps": np.float64(np.inf), "lo": [-math.inf], "nan": math.nan, "x": 0.5}
    text = jsonsafe.dumps(value, indent=2)
    assert strict_loads(text) == {"eps": "inf", "lo": ["-inf"], "nan": None, "x": 0.5}
    assert jsonsafe.loads(text) == {"eps": math.inf, "lo": [-math.inf], "nan": None, "x": 0.5}


def test_loads_keeps_free_text_fields_and_reads_old_files():
    assert jsonsafe.loads('{"name": "inf", "eps": "inf"}', keep=("name",)) == {
        "name": "inf", "eps": math.inf}
    old = jsonsafe.loads('{"eps": Infinity, "loss": NaN}')  # written before the convention
    assert old["eps"] == math.inf and math.isnan(old["loss"])


def test_writing_raises_when_a_non_finite_value_bypasses_the_conversion():
    # A ``default`` hook that returns NaN skips to_json_safe: allow_nan=False catches it.
    with pytest.raises(ValueError, match="Out of range float"):
        jsonsafe.dumps({"x": object()}, default=lambda _obj: math.nan)
    with pytest.raises(TypeError):
        jsonsafe.dumps({"x": 1.0}, allow_nan=True)


def test_history_jsonl_is_strict_and_round_trips(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _history().write_jsonl(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    first = strict_loads(lines[0])
    assert first["train_loss"] is None
    assert first["extra"] == {"epsilon": "inf", "delta": 1e-5, "grad": "-inf"}
    for line in lines[1:]:
        strict_loads(line)
    back = History.read_jsonl(path)
    assert back.rounds[0].train_loss is None
    assert back.rounds[0].extra["epsilon"] == math.inf
    assert back.rounds[0].extra["grad"] == -math.inf
    assert back.rounds[1].train_loss == 0.7 and back.rounds[1].clients == [1]
    assert back.rounds[0].test_accuracy == 0.5


def test_run_directory_with_infinite_epsilon_is_strict_and_read_back(tmp_path):
    config = load_config(overrides=['name="inf"', "privacy.mechanism=local",
                                     "privacy.epsilon=2.0"])
    history = _history()
    summary = summarize(config, history, num_params=10)
    summary["epsilon"] = math.inf  # as a noiseless mechanism would report it
    summary["final_loss"] = math.nan
    run_dir = write_run(tmp_path / run_name(config), config, history, summary)
    strict = strict_loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert strict["epsilon"] == "inf" and strict["final_loss"] is None
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        strict_loads(line)
    # The sweep's reader gets numbers back (and leaves the run's name alone).
    point = SweepPoint(config, {"privacy.epsilon": 2.0})
    assert run_problems(run_dir, config) == []
    (row,) = collect_rows([point], tmp_path)
    assert row["status"] == "done"
    assert row["epsilon"] == math.inf and row["final_loss"] is None
    assert jsonsafe.loads((run_dir / "summary.json").read_text(), keep=("name",))[
        "name"] == "inf"
