"""Values no run could use are refused at load, quickly; the JSON Schema says the limits and the rope rule
(issues 22 and 23)."""

import json
import time

from kfold_clr.cli.main import main


def test_validate_refuses_a_million_repeats_at_once(tiny_experiment, write_yaml, capsys):
    path = write_yaml(tiny_experiment)
    started = time.perf_counter()
    assert main(["validate", str(path), "--set", "cv.n_repeats=1000000"]) == 2
    assert time.perf_counter() - started < 5  # refused at load, not after making a million repeats of splits
    assert capsys.readouterr().err.strip() == "kfold-clr: error: cv.n_repeats: 1000000 must be <= 1000"
    assert main(["validate", str(path), "--set", "strategies.constant.lr=1e308"]) == 2
    assert "strategies.constant.lr: 1e+308 must be <= 1000" in capsys.readouterr().err


def test_the_json_schema_carries_the_limits_and_the_rope_rule(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    definitions = schema["$defs"]
    assert definitions["CVConfig"]["properties"]["n_repeats"]["maximum"] == 1000
    assert [option.get("maximum", option.get("items", {}).get("maximum"))  # a value, or a grid of values
            for option in definitions["ConstantStrategy"]["properties"]["lr"]["anyOf"]] == [1000, 1000]
    rope = definitions["CompareConfig"]["properties"]["rope"]
    assert {"type": "object", "additionalProperties": {"minimum": 0.0, "type": "number"}} in rope["anyOf"]
    assert "a number sets the primary metric's" in rope["description"]
    assert "no rope otherwise" in rope["description"]
