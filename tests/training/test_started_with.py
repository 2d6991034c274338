"""`--resume` continues only checkpoints started with the same config (bar `FREE_KEYS`) and the same rows."""
import pytest

from bsmfusion.errors import ConfigError, DataError
from bsmfusion.training.started_with import FILE, check_resume
from tests.helpers import fast_config, mixed


def test_resume_refuses_another_config_or_other_rows_and_names_what_changed(tmp_path):
    cfg, train_df, val_df = fast_config("concat", epochs=3), mixed(40, 0), mixed(20, 1)
    work = tmp_path / "model.work"
    check_resume(work, cfg, train_df, val_df, resume=False)
    assert (work / FILE).is_file()
    check_resume(work, cfg, train_df, val_df, resume=True)  # the same run: fine

    changed = fast_config("concat", epochs=2)
    with pytest.raises(ConfigError, match=r"^--resume: .*model\.work was started with train\.epochs=3, this run has 2; "
                                          r"rerun with what it was started with, or with --overwrite"):
        check_resume(work, changed, train_df, val_df, resume=True)
    with pytest.raises(DataError, match="started on other training or validation rows"):
        check_resume(work, cfg, train_df.iloc[1:], val_df, resume=True)

    free = fast_config("concat", epochs=3)
    free.train.num_workers, free.train.eval_batch_size, free.model.ensemble.bags = 1, 7, 3
    check_resume(work, free, train_df, val_df, resume=True)  # batch building, scoring, combination: free to change
    check_resume(work, changed, train_df.iloc[1:], val_df, resume=False)  # a fresh run records what it starts with
    check_resume(work, changed, train_df.iloc[1:], val_df, resume=True)


def test_a_work_folder_from_before_the_record_is_resumed_as_it_is(tmp_path):
    work = tmp_path / "old.work"
    work.mkdir()
    check_resume(work, fast_config("concat"), mixed(10, 0), mixed(10, 1), resume=True)
    assert (work / FILE).is_file()
