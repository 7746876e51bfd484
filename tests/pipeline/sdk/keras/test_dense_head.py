from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline.sdk.keras.dense_head import dense_layers, evaluate_classifier, make_optimizer


def test_one_width_per_layer_or_one_for_all() -> None:
    per_layer = dense_layers({"n_layers": 2, "units": [64, 16, 8], "activation": "relu", "dropout": 0.1})
    assert [layer.units for layer in per_layer if isinstance(layer, keras.layers.Dense)] == [64, 16]
    same = dense_layers({"n_layers": 3, "units": 32, "activation": "gelu", "dropout": 0.0})
    assert [layer.units for layer in same if isinstance(layer, keras.layers.Dense)] == [32, 32, 32]


def test_optimizers_by_name() -> None:
    assert isinstance(make_optimizer("sgd", 0.1), keras.optimizers.SGD)
    assert make_optimizer("adamw", 1e-3).__class__.__name__ == "AdamW"
    with pytest.raises(ValueError, match="'lion' is unknown; allowed: adam, adamw, rmsprop, sgd"):
        make_optimizer("lion", 1e-3)


def test_evaluate_classifier_counts_hits() -> None:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
    model.set_weights([np.array([[1.0, -1.0], [-1.0, 1.0]], np.float32), np.zeros(2, np.float32)])
    features = np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]], np.float32)
    evaluation = evaluate_classifier(model, features, np.array([0, 1, 1]), ["a", "b"])
    assert evaluation.value == pytest.approx(2 / 3) and evaluation.n == 3
    assert evaluation.y_pred.tolist() == [0, 1, 0]
