"""The class names image folders carry: the model's, else the circuits' targets'."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from neurflow.core.class_names import class_folder_names


def _circuit(index: int, name: str | None):
    return SimpleNamespace(target=SimpleNamespace(class_index=index, name=name))


def test_class_folder_names_come_from_the_model_else_from_the_circuits():
    circuits = [_circuit(0, "class0"), _circuit(1, "class1"), _circuit(2, None)]
    assert class_folder_names(["cat", "dog", "owl"], 3, circuits) == ["cat", "dog", "owl"]
    assert class_folder_names(None, 4, circuits) == ["class0", "class1", None, None]
    with pytest.raises(ValueError, match="class_names has 2 names but the model has 3 classes"):
        class_folder_names(["cat", "dog"], 3, circuits)
