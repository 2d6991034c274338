"""`predict --help` lists every column predict writes, with its unit and sign, and nothing it does not write; the
`baseline` column makes the contributions checkable: text + tab + baseline = the row's log-odds."""
import numpy as np
import pandas as pd

import bsmfusion
from bsmfusion.cli import build_parser, main
from bsmfusion.inference.columns import OUTPUT_COLUMNS
from tests.helpers import make_frame, planted_frame


def predict_help() -> str:
    return build_parser()._subparsers._group_actions[0].choices["predict"].format_help()


def documented_name(column: str, id_column: str | None) -> str:
    """The name the help gives a real output column: placeholders for the id and the per-class columns."""
    if column == id_column or column == "row":
        return "<data.id> | row"
    return "prob_<label>" if column.startswith("prob_") else column


def test_the_predict_epilog_names_exactly_the_columns_predict_writes(bundle_factory, tmp_path):
    bundle = bundle_factory("tfidf_lr")  # every kind writes the same columns (tests/classical/test_members.py)
    make_frame(12, seed=3).drop(columns="label").to_csv(tmp_path / "rows.csv", index=False)
    assert main(["predict", "--model", str(bundle.path), "--data", str(tmp_path / "rows.csv"), "--out",
                 str(tmp_path / "s.csv"), "--quiet"]) == 0
    written = pd.read_csv(tmp_path / "s.csv").columns
    id_column = bsmfusion.load(bundle.path).cfg.data.id
    help_text = predict_help()
    documented = [name for name, _ in OUTPUT_COLUMNS]
    assert list(dict.fromkeys(documented_name(c, id_column) for c in written)) == documented  # same, same order
    for name, meaning in OUTPUT_COLUMNS:
        assert f"  {name} " in help_text, name
    assert "log-odds toward the positive class" in help_text and "baseline" in help_text


def test_text_plus_tab_plus_baseline_is_the_logit_of_the_probability(bundle_factory):
    for kind in ("tfidf_lr", "gbdt", "gate"):
        predictor = bsmfusion.load(bundle_factory(kind).path)
        out = predictor.predict_frame(planted_frame(40, "text", 3))
        positive = f"prob_{predictor.label_names[1]}"
        logit = np.log(out[positive] / (1 - out[positive]))
        total = out["text_contribution"] + out["tab_contribution"] + out["baseline"]
        np.testing.assert_allclose(total, logit, atol=1e-4, err_msg=kind)
        assert np.ptp(out["baseline"]) < 1e-5  # one baseline per bundle
        explained = predictor.explain(planted_frame(5, "text", 4))
        assert list(explained.columns) == ["text_contribution", "tab_contribution", "baseline", "text_share"]
