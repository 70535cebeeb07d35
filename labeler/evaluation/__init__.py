"""Offline label-quality evaluation (``neurflow evaluate``)."""

from neurflow.labeler.evaluation.evaluate import EvaluationOptions, evaluate_circuit, format_comparison, format_report
from neurflow.labeler.evaluation.reference import References, from_csv

__all__ = ["EvaluationOptions", "References", "evaluate_circuit", "format_comparison", "format_report", "from_csv"]
