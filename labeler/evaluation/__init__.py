"""Offline label-quality evaluation (``neurflow evaluate``)."""

from labeler.evaluation.evaluate import EvaluationOptions, evaluate_circuit, format_comparison, format_report
from labeler.evaluation.reference import References, from_csv, from_world

__all__ = ["EvaluationOptions", "References", "evaluate_circuit", "format_comparison", "format_report", "from_csv", "from_world"]
