"""Messages come back from the parser exactly as removed; absent columns take their reference values."""
import numpy as np
import pandas as pd
import pytest

from bsmfusion.data.dialogue import parse_thread
from bsmfusion.data.tabular import TabularPreprocessor
from bsmfusion.explain.players import (background_values, feature_rows, message_rows, reference_values,
                                       row_messages)
from bsmfusion.classical.tab_features import tab_matrix
from tests.helpers import SHARED_DATA, planted_thread, tiny_config

ODD = ["BUYER: is it <b>still</b> available? &amp; price\nSELLER: yes [url] http://x.io <eos> plain line\n"
       "continues here", "[bom] A1: hi [eom][bom]no role & more[eom] THEM: ok 5 < 6", ""]


def reparsed(cell: str) -> list[tuple]:
    return [(m.role, m.text) for m in parse_thread(cell)]


@pytest.mark.parametrize("cells", [ODD, list(planted_thread(20, 0)["dialogue"])])
def test_every_coalition_of_messages_parses_back_to_exactly_those_messages(cells):
    cfg = tiny_config()
    frame = pd.DataFrame({"dialogue": cells, "price": 1.0, "ratio": 0.0, "category": "a"})
    for i, players in enumerate(row_messages(frame, cfg)):
        masks = np.random.default_rng(i).integers(0, 2, (6, len(players))).astype(bool)
        rows = message_rows(frame, i, players, masks, ["dialogue"])
        for mask, cell in zip(masks, rows["dialogue"]):
            assert reparsed(cell) == [(p.role, p.text) for p, keep in zip(players, mask) if keep]


def test_real_threads_parse_back_whole():
    path = SHARED_DATA / "craigslist_bargains" / "cb_flat.csv"
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared data folder is not mounted)")
    cells = pd.read_csv(path, usecols=["messages_only"], nrows=200)["messages_only"].tolist()
    frame = pd.DataFrame({"dialogue": cells, "price": 1.0, "ratio": 0.0, "category": "a"})
    for i, players in enumerate(row_messages(frame, tiny_config())):
        cell = message_rows(frame, i, players, np.ones((1, len(players)), bool), ["dialogue"])["dialogue"][0]
        assert reparsed(cell) == [(p.role, p.text) for p in players], i


def test_absent_columns_take_the_mean_the_mode_or_a_background_rows_values():
    train = pd.DataFrame({"x": [1.0, 2.0, np.nan, 5.0], "c": ["a", "b", "b", None]})
    tabular = TabularPreprocessor.fit(train, ["x"], ["c"])
    reference = reference_values(tabular)
    assert reference == {"x": pytest.approx(tabular.numeric_stats["x"].mean), "c": "b"}
    frame = pd.DataFrame({"x": [9.0], "c": ["a"]})
    rows = feature_rows(frame, 0, ["x", "c"], [reference], np.array([[True, False], [False, True]]))
    assert rows["x"].tolist() == [9.0, pytest.approx(reference["x"])] and rows["c"].tolist() == ["b", "a"]
    back = background_values(tabular, tab_matrix(tabular, train))  # tab_matrix → values → the same matrix
    np.testing.assert_allclose(tab_matrix(tabular, pd.DataFrame(back)), tab_matrix(tabular, train), atol=1e-9)
