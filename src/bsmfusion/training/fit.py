"""Training a torch fusion (the registry's trainer for the neural family, `kinds.NEURAL_TRAINER`): fit
preprocessing on train, fine-tune with Lightning, calibrate and pick the threshold (`train.decision`) on validation,
write the bundle. Checkpoints live in `<out>.work/` so `--resume` can continue after an interruption; the folder is
removed when training succeeds (a multi-process run keeps its `ranks/` fingerprints there). `workflows.train.train`
is the entry point for every kind."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

from ..bundle import write_bundle
from ..config import Config
from ..data.dataset import Collator, EncodedDataset, EncodedTable
from ..data.validation import split_meta
from ..data.preprocess import RowPreprocessor
from ..data.sampling import BucketBatchSampler, ResumableDataLoader, sorted_batches
from ..data.text import load_tokenizer, tokenizer_source
from ..decision import check_feasible, fit_decision
from ..evaluation.metrics import classification_metrics
from ..precision import resolve_precision
from ..models.classifier import build_model
from ..kinds import TrainResult, TrainRun
from ..models.scores import score_table
from ..progress import DEFAULT_LOG_EVERY, stage
from ..resources import cache_root
from .baseline import embedding_means
from .checkpoint_io import AtomicCheckpointIO
from .frozen_layers import attach_frozen_states, cache_device, detach_frozen_states
from .history import ValidationHistory, monitor_mode
from .lit_module import FusionLitModule
from .started_with import check_resume

log = logging.getLogger("bsmfusion.train")


def quiet_lightning() -> None:
    """Keep Lightning's banners and tips out of the user's terminal; warnings and errors still show."""
    import warnings

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")  # the frozen encoder, on purpose


def finish_work_folder(work: Path, world_size: int = 1) -> Path | None:
    """After a successful run: remove `<out>.work/` (checkpoints, logs), or, in a multi-process run, everything in
    it but `ranks/` (other ranks may still be writing their fingerprints there). Returns the folder if kept."""
    import shutil

    if world_size <= 1:
        shutil.rmtree(work, ignore_errors=True)
        return None
    for child in work.iterdir() if work.is_dir() else ():
        if child.name != "ranks":
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
    return work


def class_weights(labels: np.ndarray, num_classes: int, setting) -> torch.Tensor | None:
    """`balanced` → n / (k · count_c); a list is used as given; `none` → None."""
    if setting == "none":
        return None
    if setting == "balanced":
        counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
        return torch.tensor(len(labels) / (num_classes * np.maximum(counts, 1.0)), dtype=torch.float32)
    weights = list(setting)
    if len(weights) != num_classes:
        raise ValueError(f"train.class_weight has {len(weights)} weights but there are {num_classes} classes")
    return torch.tensor(weights, dtype=torch.float32)


def training_device(cfg: Config) -> torch.device:
    """The device type training runs on (for the precision decision)."""
    return torch.device("cuda" if cfg.train.accelerator != "cpu" and torch.cuda.is_available() else "cpu")


def lightning_precision(cfg: Config) -> str:
    """`train.precision` resolved for the training device, in Lightning's vocabulary."""
    return resolve_precision(cfg.train.precision, training_device(cfg)).lightning()


def monitor_for(cfg: Config) -> tuple[str, str]:
    name = cfg.train.monitor or "val_roc_auc"
    name = name if name.startswith("val_") else f"val_{name}"
    return name, monitor_mode(name)


def build_strategy(cfg: Config):
    """`auto`, `ddp` (gloo on CPU, NCCL on GPU) or `fsdp` wrapping each encoder layer."""
    if cfg.train.strategy == "ddp":
        from pytorch_lightning.strategies import DDPStrategy

        return DDPStrategy(find_unused_parameters=cfg.model.fusion == "cross_attn")
    if cfg.train.strategy == "fsdp":
        from pytorch_lightning.strategies import FSDPStrategy
        from transformers.models.bert.modeling_bert import BertLayer

        # use_orig_params keeps parameter names and modules, which the weight-decay groups are chosen by
        return FSDPStrategy(auto_wrap_policy={BertLayer}, sharding_strategy="FULL_SHARD", use_orig_params=True)
    return "auto"


def weights_fingerprint(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def _loader(table: EncodedTable, collator: Collator, sampler,
            num_workers: int = 0) -> ResumableDataLoader | torch.utils.data.DataLoader:
    """Batches of `table` in `sampler`'s order; `num_workers` > 0 collates in that many worker processes, kept
    alive across epochs (the table is tokenised already, so workers only pad and stack)."""
    dataset = EncodedDataset(table)
    loader = ResumableDataLoader if isinstance(sampler, BucketBatchSampler) else torch.utils.data.DataLoader
    return loader(dataset, batch_sampler=sampler, collate_fn=collator, num_workers=num_workers,
                  persistent_workers=num_workers > 0)


def embedding_cache_dir(cfg: Config) -> Path:
    if cfg.train.embedding_cache:
        return Path(cfg.train.embedding_cache)
    return cache_root() / "embeddings"


def freeze_text_encoder(model, cfg: Config, collator: Collator, tables: tuple[EncodedTable, ...]) -> None:
    """Attach cached thread vectors (or, for a learned chunk reduce, chunk vectors) to each table and stop
    gradients into the backbone."""
    from .frozen import attach_frozen_text_features

    for table in tables:
        attach_frozen_text_features(model.text_subnetwork, table, collator, embedding_cache_dir(cfg),
                                    precision=resolve_precision(cfg.train.precision, "cpu"),
                                    batch_size=cfg.train.eval_batch_size)
    model.text_subnetwork.backbone.requires_grad_(False)
    model.text_subnetwork.backbone.eval()


def prepare(cfg: Config, train: pd.DataFrame, val: pd.DataFrame):
    """Validate the splits, fit preprocessing on train only and tokenise both splits once."""
    from ..data import validation

    validation.check_splits(train, val, cfg)
    tokenizer = load_tokenizer(tokenizer_source(cfg.text))
    preprocessor = RowPreprocessor.fit(cfg, tokenizer, train)
    validation.warn_about_splits(train, val, cfg, preprocessor.label_names)
    return tokenizer, preprocessor, preprocessor.encode(train), preprocessor.encode(val)


def build_trainer(cfg: Config, work: Path, steps_per_epoch: int, progress: bool, *,
                  log_every: float = DEFAULT_LOG_EVERY, callbacks: Sequence[pl.Callback] = (),
                  holdout: bool = False) -> tuple[pl.Trainer, Any, Any, str]:
    """The Lightning trainer with best/last checkpoints (atomic writes), early stopping (unless
    `train.keep_weights: last`), the validation history (`train.checks_per_epoch` rows an epoch), an early end
    (`train.stop_after_steps`) and the run's strategy. Returns (trainer, best checkpoint callback,
    `ValidationHistory`, monitor).
    `progress`: Lightning's live bar on a terminal, else `LogProgress` lines every `log_every` seconds (stderr).
    `callbacks` are added after the trainer's own (tests pass fault injectors here). `holdout`: the validation
    loader holds a holdout of the training rows (`TrainRun.holdout`), and the progress lines say so."""
    from .progress import LogProgress, use_terminal_bar

    monitor, mode = monitor_for(cfg)
    best = pl.callbacks.ModelCheckpoint(dirpath=work / "best", filename="best", monitor=monitor, mode=mode,
                                        save_top_k=1, save_weights_only=True, enable_version_counter=False)
    last = pl.callbacks.ModelCheckpoint(dirpath=work / "last", filename="last", save_top_k=1,
                                        every_n_train_steps=max(1, cfg.train.checkpoint_every_steps),
                                        enable_version_counter=False)
    history = ValidationHistory()
    own: list[pl.Callback] = [best, last, history]
    if cfg.train.keep_weights == "best":  # `last`: a fixed-length refit, nothing is chosen on its validation rows
        own.append(pl.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=cfg.train.patience))
    terminal_bar = progress and use_terminal_bar()
    if progress and not terminal_bar:
        shown_as = "holdout_" + monitor.removeprefix("val_") if holdout else monitor
        own.append(LogProgress(monitor, log_every=log_every, shown_as=shown_as))
    trainer = pl.Trainer(
        max_epochs=cfg.train.epochs,
        max_steps=cfg.train.stop_after_steps or -1,  # an early end; the schedule stays planned for the epochs
        val_check_interval=1.0 / cfg.train.checks_per_epoch,
        accelerator=cfg.train.accelerator,
        devices=cfg.train.devices,
        num_nodes=cfg.train.num_nodes,
        strategy=build_strategy(cfg),
        precision=lightning_precision(cfg),
        gradient_clip_val=cfg.train.grad_clip,
        accumulate_grad_batches=cfg.train.accumulate_grad_batches,
        limit_train_batches=cfg.train.limit_train_batches,
        callbacks=[*own, *callbacks],
        logger=pl.loggers.CSVLogger(str(work), name="logs", version=0),
        enable_progress_bar=terminal_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        deterministic=False,
        log_every_n_steps=min(50, steps_per_epoch),
        default_root_dir=str(work),
        plugins=[AtomicCheckpointIO()],
    )
    return trainer, best, history, monitor


def clear_stale_work(work: Path, run: TrainRun) -> None:
    """A fresh run (no `--resume`) must not pick up another run's checkpoints: remove `work`. The CLI and
    `bsmfusion.train` refuse an existing `<out>.work/` before this unless `--overwrite` / `overwrite=True` said to
    discard it (`folders.check_work_folder`)."""
    if not run.resume and work.exists():
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def train_neural(cfg: Config, train_df: pd.DataFrame, val_df: pd.DataFrame, out_dir: str | Path,
                 run: TrainRun = TrainRun()) -> TrainResult:
    """Train the torch fusion `cfg.model.fusion` and write its bundle to `out_dir` (rank 0 only).
    `<out_dir>.work/` holds the checkpoints and is removed on success unless `run.keep_work` (an ensemble's
    members: their checkpoints must survive until the whole ensemble is written). `run.progress`: a live bar on a
    terminal, else a line every `run.log_every` seconds on stderr (`training.progress`); `run.callbacks`: extra
    Lightning callbacks."""
    quiet_lightning()
    out_dir = Path(out_dir)
    work = out_dir.with_name(out_dir.name + ".work")
    clear_stale_work(work, run)
    check_resume(work, cfg, train_df, val_df, run.resume)  # never continue checkpoints of another config or rows
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    resume, progress = run.resume, run.progress
    fusion = cfg.model.fusion
    with stage(f"{fusion}: tokenising {len(train_df):,} training and {len(val_df):,} "
               f"{'holdout' if run.holdout else 'validation'} rows"):
        tokenizer, preprocessor, train_table, val_table = prepare(cfg, train_df, val_df)
    check_feasible(cfg.train.policy, val_table.labels)  # before any training, not after it
    model = build_model(cfg, preprocessor.tabular.numeric_dim, preprocessor.tabular.cardinalities)
    model.train()  # from_pretrained returns eval mode; Lightning keeps modules' modes as they are
    model.set_class_weights(class_weights(train_table.labels, cfg.model.num_classes, cfg.train.class_weight))

    if model.text_subnetwork is not None:
        model.text_subnetwork.freeze_lower_layers(cfg.train.freeze_layers)
    collator = Collator.for_text(cfg.text, tokenizer.pad_token_id)
    if cfg.train.freeze_encoder and model.text_subnetwork is not None:
        with stage(f"{fusion}: encoding the threads once (frozen encoder; cached for the next run)"):
            freeze_text_encoder(model, cfg, collator, (train_table, val_table))
    text = model.text_subnetwork
    if cfg.train.freeze_layers and text is not None and not cfg.train.freeze_encoder and text.encode_mode == "packed":
        with stage(f"{fusion}: the frozen layers' output at every token, once"):
            attach_frozen_states(text, (train_table, val_table), collator, device=cache_device(training_device(cfg)),
                                 precision=resolve_precision(cfg.train.precision, training_device(cfg)),
                                 budget_gib=cfg.train.frozen_layer_cache_gib, batch_size=cfg.train.eval_batch_size,
                                 shared=run.shared_states)
    sampler = BucketBatchSampler(train_table.token_counts(), cfg.train.batch_size, cfg.train.seed)
    train_loader = _loader(train_table, collator, sampler, cfg.train.num_workers)
    val_loader = _loader(val_table, collator, sorted_batches(val_table.token_counts(), cfg.train.eval_batch_size),
                         cfg.train.num_workers)
    steps_per_epoch = max(1, -(-len(sampler) // cfg.train.accumulate_grad_batches))
    if cfg.train.limit_train_batches:
        steps_per_epoch = min(steps_per_epoch, -(-cfg.train.limit_train_batches // cfg.train.accumulate_grad_batches))
    module = FusionLitModule(model, cfg.train, total_steps=steps_per_epoch * cfg.train.epochs)

    trainer, best, history, monitor = build_trainer(cfg, work, steps_per_epoch, progress, log_every=run.log_every,
                                                    callbacks=run.callbacks, holdout=run.holdout)
    last_ckpt = work / "last" / "last.ckpt"
    ckpt_path = str(last_ckpt) if resume and last_ckpt.is_file() else None
    if resume and ckpt_path is None:
        log.warning("--resume: no checkpoint in %s; starting from scratch", work / "last")
    trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt_path)
    detach_frozen_states((train_table, val_table))  # the baseline and the scores below run the whole encoder

    sharded = cfg.train.strategy == "fsdp"
    if sharded:
        # FSDP: the modules hold shards; gathering the full weights is a collective every rank must join, and
        # rank 0 then continues on a fresh, unwrapped model (checked on GPUs only: no GPU in CI)
        full_state = trainer.strategy.lightning_module_state_dict()
        if trainer.is_global_zero:
            module = FusionLitModule(build_model(cfg, preprocessor.tabular.numeric_dim,
                                                 preprocessor.tabular.cardinalities, load_weights=False),
                                     cfg.train, total_steps=1)
            module.load_state_dict(full_state)
    fingerprint = weights_fingerprint(module.model) if trainer.is_global_zero or not sharded else "sharded"
    (work / "ranks").mkdir(parents=True, exist_ok=True)
    (work / "ranks" / f"rank{trainer.global_rank}.json").write_text(
        json.dumps({"rank": trainer.global_rank, "weights_sha256": fingerprint}))
    if not trainer.is_global_zero:
        return TrainResult(None, None, {}, trainer.current_epoch)

    if cfg.train.keep_weights == "best" and best.best_model_path and Path(best.best_model_path).is_file():
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    model = module.model.to("cpu").float().eval()
    # the threshold and validation metrics come from the precision the bundle scores with by default
    scoring_precision = resolve_precision(cfg.train.precision, "cpu")
    log.info("validation scoring precision: %s", scoring_precision.describe())
    with stage(f"{fusion}: baseline, scoring {len(val_table):,} {'holdout' if run.holdout else 'validation'} "
               "rows, calibration and threshold"):
        model.set_baseline(*embedding_means(model, train_table, collator, precision=scoring_precision,
                                            batch_size=cfg.train.eval_batch_size, seed=cfg.train.seed))
        scores = score_table(model, val_table, collator, batch_size=cfg.train.eval_batch_size,
                             precision=scoring_precision)
        labels = val_table.labels
        fitted = fit_decision(cfg, labels, scores)  # calibration, then the threshold on the calibrated probabilities
    threshold = fitted.threshold
    val_metrics = classification_metrics(labels, fitted.scores.probs, threshold)
    epochs_run = trainer.current_epoch
    extra = {"epochs_run": epochs_run, "steps_run": trainer.global_step, "train_rows": len(train_table),
             "val_rows": len(val_table),
             "monitor": monitor, "best_score": float(best.best_model_score) if best.best_model_score is not None else None,
             "validation_history": history.rows,
             "training_precision": resolve_precision(cfg.train.precision, training_device(cfg)).to_json(),
             "validation_precision": scoring_precision.to_json()}
    extra.update(split_meta(train_df, cfg))  # `evaluate` warns about test groups seen in training
    extra.update(fitted.meta())
    with stage(f"{fusion}: writing the bundle {out_dir}"):
        write_bundle(out_dir, cfg=cfg, preprocessor=preprocessor, tokenizer=tokenizer, model=model,
                     threshold=threshold, metrics={"validation": val_metrics}, extra_meta=extra,
                     files=fitted.files(), sign_key=run.sign_key)
    if run.keep_work:
        return TrainResult(out_dir, threshold, val_metrics, epochs_run, work_dir=work, val_scores=scores)
    return TrainResult(out_dir, threshold, val_metrics, epochs_run, work_dir=finish_work_folder(work, trainer.world_size),
                       val_scores=scores)
