import numpy as np
import pandas as pd
import pytest

from bsmfusion.data.tabular import MISSING_ID, UNKNOWN_ID, TabularPreprocessor
from bsmfusion.errors import DataError

TRAIN = pd.DataFrame({
    "price": [10.0, 20.0, np.nan, 40.0, 30.0],
    "qty": [1, 2, 3, 4, 5],
    "category": ["a", "b", "a", None, "c"],
    "label": [0, 1, 0, 1, 0],
})


def fitted():
    return TabularPreprocessor.fit(TRAIN, ["price", "qty"], ["category"], label="label")


def test_fit_uses_train_medians_and_indicators_only_for_columns_with_missing():
    prep = fitted()
    assert prep.numeric_feature_names == ["price", "qty", "price__missing"]
    assert prep.numeric_stats["price"].median == 25.0
    assert not prep.numeric_stats["qty"].had_missing
    numeric, _ = prep.transform(TRAIN)
    assert numeric.shape == (5, 3) and numeric.dtype == np.float32
    np.testing.assert_array_equal(numeric[:, 2], [0, 0, 1, 0, 0])
    # the imputed row gets the scaled median
    stats = prep.numeric_stats["price"]
    assert numeric[2, 0] == pytest.approx((25.0 - stats.mean) / stats.std, rel=1e-6)
    assert abs(numeric[:, 1].mean()) < 1e-6


def test_unseen_categories_missing_and_extreme_values():
    prep = fitted()
    new = pd.DataFrame({"price": [np.inf, -np.inf, 1e300, np.nan, "7"], "qty": [None, 2, -1e300, 3, 3],
                        "category": ["zzz", None, "a", float("nan"), "b"]})
    numeric, categorical = prep.transform(new)
    assert np.isfinite(numeric).all()
    assert numeric[0, 0] == prep.clip and numeric[1, 0] == -prep.clip and numeric[2, 0] == prep.clip
    assert numeric[2, 1] == -prep.clip
    np.testing.assert_array_equal(numeric[:, 2], [0, 0, 0, 1, 0])
    vocab = prep.vocab["category"]
    assert categorical[:, 0].tolist() == [UNKNOWN_ID, MISSING_ID, vocab.index("a") + 2, MISSING_ID, vocab.index("b") + 2]
    assert prep.cardinalities == [len(vocab) + 2] == [5]


def test_training_outlier_does_not_blow_up_the_scale():
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0, 1e300] * 20})
    prep = TabularPreprocessor.fit(frame, ["x"], [])
    numeric, _ = prep.transform(frame)
    assert np.isfinite(prep.numeric_stats["x"].std)
    assert len(np.unique(numeric[:, 0])) == 5


def test_json_round_trip_gives_identical_outputs():
    prep = fitted()
    again = TabularPreprocessor.from_json(prep.to_json())
    probe = pd.DataFrame({"price": [np.nan, 5.0, 1e300], "qty": [1, np.inf, 2], "category": ["c", "new", None]})
    for a, b in zip(prep.transform(probe), again.transform(probe)):
        np.testing.assert_array_equal(a, b)


def test_label_or_id_as_feature_is_refused():
    with pytest.raises(DataError, match="'label' is the label column"):
        TabularPreprocessor.fit(TRAIN, ["price", "label"], [], label="label")
    with pytest.raises(DataError, match="'qty' is the id column"):
        TabularPreprocessor.fit(TRAIN, ["price"], ["qty"], id_column="qty")


def test_non_numeric_value_names_column_and_row_and_missing_column_suggests():
    bad = TRAIN.assign(price=["1", "2", "three", "4", "5"])
    with pytest.raises(DataError, match=r"column 'price' row 2: value 'three' is not a number"):
        TabularPreprocessor.fit(bad, ["price"], [])
    with pytest.raises(DataError, match="did you mean 'price'"):
        TabularPreprocessor.fit(TRAIN, ["prise"], [])


def test_integer_like_categories_match_across_types():
    prep = TabularPreprocessor.fit(pd.DataFrame({"c": [1, 2, 2]}), [], ["c"])
    _, cat = prep.transform(pd.DataFrame({"c": [1.0, "2", 3]}))
    assert cat[:, 0].tolist()[:2] == [prep.vocab["c"].index("1") + 2, prep.vocab["c"].index("2") + 2]
    assert cat[2, 0] == UNKNOWN_ID
