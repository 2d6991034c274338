import pytest

from bsmfusion.config import config_from_dict, load_config
from bsmfusion.errors import ConfigError


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  fusion: gate\n  hiden_dim: 64\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.hiden_dim'"):
        load_config(path)


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"'text\.max_chunks'"):
        config_from_dict({"text": {"max_chunks": "many"}})
    with pytest.raises(ConfigError, match=r"'model\.fusion'"):
        config_from_dict({"model": {"fusion": "sum"}})


def test_text_column_string_or_list_and_defaults():
    cfg = config_from_dict({"data": {"text": "dialogue"}})
    assert cfg.data.text == ["dialogue"]
    assert config_from_dict({"data": {"text": ["title", "body"]}}).data.text == ["title", "body"]
    assert cfg.model.hidden_dim == 100 and cfg.model.resolved_fusion_dim == 100 and cfg.model.num_heads == 4


def test_label_as_feature_is_refused():
    with pytest.raises(ConfigError, match="column 'y' is data.label"):
        config_from_dict({"data": {"label": "y", "numeric": ["x", "y"]}})


def test_overrides_and_missing_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {fusion: concat}\n")
    assert load_config(path, {"model.fusion": "moe", "train.epochs": 5}).train.epochs == 5
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_head_chunks_default_keeps_mostly_tail():
    assert config_from_dict({"text": {"max_chunks": 4}}).text.resolved_head_chunks == 1
    assert config_from_dict({"text": {"max_chunks": 1}}).text.resolved_head_chunks == 0
    with pytest.raises(ConfigError, match="head_chunks"):
        config_from_dict({"text": {"max_chunks": 2, "head_chunks": 3}})


def test_shipped_example_configs_validate():
    from pathlib import Path

    examples = Path(__file__).resolve().parents[1] / "examples"
    for path in sorted(examples.glob("*.yaml")):
        load_config(path)
