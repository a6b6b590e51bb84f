"""Synthetic data with known ground truth: a retail chain to test, measure and demo against."""

from app.synthetic.chain import (
    DEFECTIONS,
    RULE_FOR,
    RULES_FOR,
    Assessment,
    Chain,
    ChainSpec,
    Detection,
    Kind,
    OpenedAlert,
    Truth,
    assess,
    generate,
)

__all__ = [
    "DEFECTIONS",
    "RULES_FOR",
    "RULE_FOR",
    "Assessment",
    "Chain",
    "ChainSpec",
    "Detection",
    "Kind",
    "OpenedAlert",
    "Truth",
    "assess",
    "generate",
]
