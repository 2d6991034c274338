"""Parity with the design note's parameter tables (examples/seed_parity.yaml)."""
import json
from pathlib import Path

import pytest

from bsmfusion.cli import main

SEED = str(Path(__file__).resolve().parents[1] / "examples" / "seed_parity.yaml")
EXPECTED = {
    "concat": ({"tab_subnetwork": 1222, "text_subnetwork": 167433316, "final_merge_network": 603, "loss_op": 0},
               167435141, "669.741"),
    "moe": ({"tab_subnetwork": 1222, "text_subnetwork": 167433316, "moe_fusion": 402, "classifier": 303, "loss_op": 0},
            167435243, "669.741"),
    "cross_attn": ({"tab_subnetwork": 1222, "text_subnetwork": 167433316, "cross_att": 81200,
                    "final_merge_network": 20403, "loss_op": 0}, 167536141, "670.145"),
    "gate": ({"tab_subnetwork": 1222, "text_subnetwork": 167433316, "text_proj": 10100, "tab_proj": 10100,
              "gate_net": 20300, "classifier": 303, "loss_op": 0}, 167475341, "669.901"),
}


@pytest.mark.parametrize("fusion", list(EXPECTED))
def test_summary_json_matches_design(fusion, capsys):
    assert main(["summary", "--config", SEED, "--fusion", fusion, "--json"]) == 0
    modules, total, _ = EXPECTED[fusion]
    assert json.loads(capsys.readouterr().out) == {"modules": modules, "total": total}


@pytest.mark.parametrize("fusion", ["concat", "cross_attn"])
def test_summary_table_prints_megabytes(fusion, capsys):
    assert main(["summary", "--config", SEED, "--fusion", fusion]) == 0
    out = capsys.readouterr().out
    assert f"{EXPECTED[fusion][2]} total estimated model params size (MB)" in out
    assert f"{EXPECTED[fusion][1]:,} total params" in out


def test_summary_of_an_ensemble_counts_one_neural_member_and_says_so_on_stderr(capsys):
    assert main(["summary", "--config", SEED, "--fusion", "ensemble", "--json"]) == 0
    out, err = capsys.readouterr()
    modules, total, _ = EXPECTED["concat"]  # the ensemble's default neural member
    assert json.loads(out) == {"modules": modules, "total": total}
    assert err == "model.fusion is ensemble with 2 neural member(s): counting one (concat)\n"


def test_summary_of_an_ensemble_without_a_neural_member_is_a_one_line_error(tmp_path, capsys):
    classical = tmp_path / "classical.yaml"
    classical.write_text("model: {ensemble: {members: [tfidf_lr, gbdt]}}\n")
    assert main(["summary", "--config", str(classical)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert "model.ensemble.members (tfidf_lr, gbdt) has no neural member" in err


def test_cli_user_error_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {fusoin: gate}\n")
    assert main(["summary", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown config key 'model.fusoin'" in err
