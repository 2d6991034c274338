"""`ScoringOptions`: one value for how a bundle scores. Its errors name the option; Python says the field, the CLI
its flag, from the same `OptionError`."""
import dataclasses

import pytest

from bsmfusion.cli import OPTION_FLAGS, main
from bsmfusion.errors import ConfigError, OptionError
from bsmfusion.scoring.options import ScoringOptions


@pytest.mark.parametrize("fields,message", [
    ({"batch_size": 0}, "batch_size must be a whole number >= 1, got 0"),
    ({"engine": "tensorrt"}, "engine 'tensorrt' is unknown; use one of auto, torch, onnx"),
    ({"precision": "fp16"}, "precision 'fp16' is unknown; use one of auto, fp32, bf16"),
    ({"chunk_cache_mb": -1}, "chunk_cache_mb must be a size in MB >= 0 (0 turns the cache off), got -1"),
    ({"quantized": True}, "quantized needs the ONNX engine (the int8 graphs run there); pass engine=onnx or engine=auto"),
    ({"decision": "max_f1", "threshold": 0.5}, "pass decision or threshold, not both (threshold=T is decision fixed=T)"),
])
def test_a_bad_option_is_one_line_naming_it(fields, message):
    with pytest.raises(OptionError) as err:
        ScoringOptions(**fields)
    assert str(err.value) == message and isinstance(err.value, ConfigError)


def test_settings_replace_fields_of_a_value_and_unknown_ones_are_named():
    base = ScoringOptions(precision="fp32", chunk_cache_mb=64)
    assert ScoringOptions.of(base, batch_size=8) == ScoringOptions(precision="fp32", chunk_cache_mb=64, batch_size=8)
    assert ScoringOptions.of() == ScoringOptions()
    with pytest.raises(OptionError, match=r"^unknown scoring option 'cache_mb'; choose from batch_size, device"):
        ScoringOptions.of(cache_mb=8)


def test_the_cli_says_its_flags(tmp_path, capsys):
    bundle = tmp_path / "model"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    data = tmp_path / "in.csv"
    data.write_text("dialogue\nhi\n")
    code = main(["predict", "--model", str(bundle), "--data", str(data), "--out", str(tmp_path / "o.csv"), "--int8"])
    assert code == 2
    assert capsys.readouterr().err.strip() == ("error: --int8 needs the ONNX engine (the int8 graphs run there); pass "
                                               "--engine=onnx or --engine=auto")
    # every scoring option has a flag (sign_key is TrainRun's: train and export sign with it)
    assert set(OPTION_FLAGS) == {f.name for f in dataclasses.fields(ScoringOptions)} | {"sign_key"}
