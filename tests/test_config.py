from pathlib import Path

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


def test_text_columns_may_be_empty_only_for_a_fusion_without_text():
    assert config_from_dict({"data": {"text": []}, "model": {"fusion": "tab_only"}}).data.text == []
    with pytest.raises(ConfigError, match=r"^config: data.text is empty but model.fusion 'gate' reads the dialogue; .*tab_only$"):
        config_from_dict({"data": {"text": []}, "model": {"fusion": "gate"}})


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "config.yaml"


def _schema_defaults(section, prefix=""):
    """(dotted key, default) for every leaf key of the schema."""
    from pydantic import BaseModel

    for name, field in section.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from _schema_defaults(field.annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field.get_default(call_default_factory=True)


def test_example_config_has_every_schema_key_with_its_default():
    import yaml

    from bsmfusion.config import EXAMPLE_COLUMNS, REGENERATE_EXAMPLE, Config

    fix = f"regenerate it from the repository root: {REGENERATE_EXAMPLE}"
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    keys = list(_schema_defaults(Config))
    assert len(keys) > 50 and ("text.cleaning.url_token", "[url]") in keys
    for key, default in keys:
        node = raw
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"examples/config.yaml lacks '{key}'; {fix}"
            node = node[part]
        expected = EXAMPLE_COLUMNS.get(key, default)
        assert node == expected, f"examples/config.yaml: '{key}' is {node!r}, expected {expected!r}; {fix}"
    cfg = load_config(EXAMPLE)
    assert cfg.data.text == ["dialogue"] and cfg.train.lr == 3e-5 and cfg.text.cleaning.url_token == "[url]"


def test_example_config_is_what_the_schema_generates():
    from bsmfusion.config import REGENERATE_EXAMPLE, example_yaml

    text = example_yaml()
    assert REGENERATE_EXAMPLE in text.splitlines()[2]
    assert EXAMPLE.read_text(encoding="utf-8") == text, (
        f"examples/config.yaml differs from the schema's keys, defaults or descriptions; regenerate it from the "
        f"repository root: {REGENERATE_EXAMPLE}")


# ---------------------------------------------------------------- error messages: did you mean, --set, YAML position
def test_misspelt_keys_get_a_did_you_mean(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  fusoin: gate\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown config key 'model\.fusoin'; did you mean 'model\.fusion'\?$"):
        load_config(path)
    # a key put in the wrong section points at the section that has it
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.fusion'; did you mean 'model\.fusion'\?$"):
        config_from_dict({"train": {"fusion": "gate"}})
    with pytest.raises(ConfigError, match=r"unknown config key 'model\.zzzz'; remove it or fix its spelling"):
        config_from_dict({"model": {"zzzz": 1}})


def test_an_error_in_an_override_names_the_override_not_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {fusion: concat}\n")
    with pytest.raises(ConfigError, match=r"^--set model\.fusoin: unknown config key 'model\.fusoin'; did you mean "
                                          r"'model\.fusion'\?$"):
        load_config(path, {"model.fusoin": "moe"})
    with pytest.raises(ConfigError, match=r"^--set model\.fusion: config key 'model\.fusion': unknown fusion"):
        load_config(path, {"model.fusion": "sum"})
    with pytest.raises(ConfigError, match=r"^--set model\.fusion\.x: 'model\.fusion' is a value, not a section"):
        load_config(path, {"model.fusion.x": 1})
    # an error in the file itself still names the file, overrides or not
    path.write_text("model: {fusion: concat, hiden_dim: 8}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown config key 'model\.hiden_dim'"):
        load_config(path, {"train.epochs": 2})


def test_invalid_yaml_names_line_and_column(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  text: dialogue\n   numeric: [x]\n")  # line 3 is indented one space too far
    with pytest.raises(ConfigError, match=r"c\.yaml: not valid YAML at line 3, column 11: mapping values are not "
                                          r"allowed here"):
        load_config(path)


def test_config_validation_imports_no_torch():
    """Config errors are argument errors: the CLI must answer them without importing torch (seconds)."""
    import subprocess
    import sys

    code = ("import sys; from bsmfusion.config import config_from_dict; "
            "cfg = config_from_dict({'model': {'fusion': 'gate', 'ensemble': {'neural': 'moe'}}}); "
            "print(cfg.model.uses_text, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False"]


def test_neural_seeds_expands_the_neural_member_in_place():
    ensemble = config_from_dict({"model": {"ensemble": {"neural_seeds": 3, "members": ["tfidf_lr", "neural", "gbdt"]}}})
    settings = ensemble.model.ensemble
    assert settings.member_names == ["tfidf_lr", "neural", "neural_2", "neural_3", "gbdt"]
    assert [settings.neural_index(n) for n in settings.member_names] == [None, 1, 2, 3, None]
    assert settings.neural_member_names == ["neural", "neural_2", "neural_3"]
    # the default: two fine-tuned members beside the classical ones (README "The default model")
    assert config_from_dict({}).model.ensemble.member_names == ["neural", "neural_2", "tfidf_lr", "gbdt"]
    with pytest.raises(ConfigError, match=r"neural_seeds \(3\) needs 'neural' in model\.ensemble\.members"):
        config_from_dict({"model": {"ensemble": {"neural_seeds": 3, "members": ["tfidf_lr"]}}})
    # the default count is moot without the neural member, written out (a bundle's config.yaml) or not
    for ensemble in ({"members": ["tfidf_lr", "gbdt"]}, {"members": ["tfidf_lr", "gbdt"], "neural_seeds": 2}):
        assert config_from_dict({"model": {"ensemble": ensemble}}).model.ensemble.member_names == ["tfidf_lr", "gbdt"]
    assert settings.neural_index("neural_0") is None and settings.neural_index("neural_02") is None
    with pytest.raises(ConfigError, match=r"seeds run from train\.seed \(4294967295\) to 4294967296"):
        config_from_dict({"train": {"seed": 2**32 - 1}})
    # ... and their seeds matter only where an ensemble trains them
    assert config_from_dict({"model": {"fusion": "gate"}, "train": {"seed": 2**32 - 1}}).train.seed == 2**32 - 1
