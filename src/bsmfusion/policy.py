"""Decision policies as the config and the scoring options write them: `Policy`, `parse_policy` and the
binary-only rule. Pure parsing, below everything that uses a policy (config validation, `decision`, which chooses
thresholds by them; `calibration`, whose platt / isotonic methods share the binary-only rule)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

POLICIES = ("max_f1", "fixed", "precision_at_least", "recall_at_least", "review_budget", "costs", "expected_f1")
BARE_WORDS = ("max_f1", "expected_f1")  # the policies named by a bare word
CLI_SYNTAX = ("max_f1 | expected_f1 | fixed=T | precision_at_least=P | recall_at_least=R | review_budget=F | costs=FP,FN "
              "(or a YAML mapping such as '{costs: {false_positive: 1, false_negative: 20}}')")


@dataclass(frozen=True)
class Policy:
    """One decision rule: `name` from `POLICIES`; `value` for fixed / precision / recall / budget; the two costs."""

    name: str = "max_f1"
    value: float | None = None
    false_positive: float | None = None
    false_negative: float | None = None

    def to_config(self) -> str | dict[str, Any]:
        """The canonical config value (`max_f1`, `{fixed: 0.3}`, `{costs: {false_positive: 1, ...}}`)."""
        if self.name in BARE_WORDS:
            return self.name
        if self.name == "costs":
            return {"costs": {"false_positive": self.false_positive, "false_negative": self.false_negative}}
        return {self.name: self.value}

    def describe(self) -> str:
        if self.name == "max_f1":
            return "max F1 on validation"
        if self.name == "expected_f1":
            return "max F1 expected from the calibrated validation probabilities"
        if self.name == "costs":
            return f"least expected cost (false positive {self.false_positive:g}, false negative {self.false_negative:g})"
        if self.name == "review_budget":
            return f"review budget: the top {self.value * 100:.4g}% of the validation scores"
        return {"fixed": "fixed threshold", "precision_at_least": "precision ≥",
                "recall_at_least": "recall ≥"}[self.name] + f" {self.value:g}" + ("" if self.name == "fixed" else
                                                                                 " on validation")


def _number(name: str, value: Any, low: float, high: float, high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} needs a number, got {value!r}")
    value = float(value)
    if not (low < value and (value < high if high_open else value <= high)):
        raise ValueError(f"{name} must be in ({low:g}, {high:g}{')' if high_open else ']'}, got {value:g}")
    return value


def _costs(value: Any) -> Policy:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        value = {"false_positive": value[0], "false_negative": value[1]}
    if not isinstance(value, dict) or set(value) != {"false_positive", "false_negative"}:
        raise ValueError("costs needs {false_positive: A, false_negative: B}")
    a, b = (_number(f"costs.{k}", value[k], 0.0, math.inf, high_open=True)
            for k in ("false_positive", "false_negative"))
    return Policy("costs", false_positive=a, false_negative=b)


def parse_policy(value: Any) -> Policy:
    """A policy from a config value or a command-line string (see `CLI_SYNTAX`); `ValueError` with one line."""
    if isinstance(value, Policy):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            import yaml

            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError:
                raise ValueError(f"'{text}' is not a YAML mapping; use {CLI_SYNTAX}") from None
        elif "=" in text:
            name, _, raw = text.partition("=")
            raw = raw.strip()
            if name.strip() == "costs":
                value = {"costs": [_float_text(part) for part in raw.split(",")]}
            else:
                value = {name.strip(): _float_text(raw)}
        elif text in BARE_WORDS:
            return Policy(text)
        else:
            raise ValueError(f"unknown decision policy '{text}'; use {CLI_SYNTAX}")
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(f"a decision policy is max_f1, expected_f1 or a mapping with exactly one of "
                         f"{', '.join(POLICIES[1:-1])}, got {value!r}")
    (name, inner), = value.items()
    if name in BARE_WORDS and inner is None:  # YAML's `{expected_f1: }` / `expected_f1:` with nothing after it
        return Policy(name)
    if name == "costs":
        return _costs(inner)
    if name == "fixed":
        return Policy("fixed", _number("fixed", inner, 0.0, 1.0, high_open=True))
    if name in ("precision_at_least", "recall_at_least", "review_budget"):
        return Policy(name, _number(name, inner, 0.0, 1.0))
    raise ValueError(f"unknown decision policy '{name}'; choose one of {', '.join(POLICIES)}")


def _float_text(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


# ------------------------------------------------------------------------------------- thresholds from validation


BINARY_ONLY = (*POLICIES[1:], "platt", "isotonic")  # every decision policy but max_f1; platt, isotonic calibration


def check_binary(num_classes: int, key: str, name: str) -> None:
    """The binary-only rule, in one wording for the config, training and scoring-time overrides: `name` (a decision
    policy or a calibration method) set under `key` needs a binary model when it is in `BINARY_ONLY`."""
    if num_classes == 2 or name not in BINARY_ONLY:
        return
    instead = "temperature" if name in ("platt", "isotonic") else "max_f1 (the default: the argmax class)"
    raise ConfigError(f"{key} '{name}' is for binary tasks, not a model with {num_classes} classes; use {instead}")
