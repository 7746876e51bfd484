"""The retrain loop the original Jenkins setup ran: add a dense layer until the goal is met.

Model ``k`` is VGG16 (the same face weights, frozen, inside the model) + global average
pooling + ``k`` Dense(512, ReLU) layers + softmax, trained from scratch with Adam (1e-3),
batch 32, a fixed number of epochs. Start at ``k = 3``; when the best epoch's
``val_accuracy`` is below the goal, ``k += 1`` and train again from scratch, until the goal,
the layer cap or the wall-clock budget. No search: the seed-era loop had none.

Run: ``python -m bench.retrain_loop --dataset lfw --result loop.json``
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.data import DATASETS, ResultFile, contender_parser, deadline_callback, load_split, preprocess

UNITS = 512
FIRST_LAYERS = 3
FULL = (10, 12)  # epochs per model, most dense layers
QUICK = (3, 4)


def build(weights: Path, size: int, n_classes: int, layers: int) -> Any:
    """Frozen VGG16 + GAP + ``layers`` x Dense(512) + softmax, compiled."""
    import keras

    base = keras.applications.VGG16(weights=str(weights), include_top=False, input_shape=(size, size, 3))
    base.trainable = False
    inputs = keras.Input((size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
    for _ in range(layers):
        x = keras.layers.Dense(UNITS, activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(n_classes, activation="softmax")(x))
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def best_weights_callback() -> Any:
    """Keeps the head's weights of the best-``val_accuracy`` epoch; restores them at the end."""
    import keras

    class BestWeights(keras.callbacks.Callback):
        best = -1.0
        weights: list[Any] | None = None

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            value = float((logs or {}).get("val_accuracy", -1.0))
            if value > self.best:
                self.best, self.weights = value, [v.numpy() for v in self.model.trainable_variables]

        def on_train_end(self, logs: Any = None) -> None:
            if self.weights is not None:
                for variable, value in zip(self.model.trainable_variables, self.weights, strict=True):
                    variable.assign(value)

    return BestWeights()


def main(argv: list[str] | None = None) -> None:
    """Train, check, add a layer, retrain from scratch; score the last model on test."""
    args = contender_parser(__doc__ or "").parse_args(argv)
    import keras

    size = args.size or DATASETS[args.dataset]
    deadline = time.monotonic() + args.budget_seconds
    epochs, max_layers = QUICK if args.quick else FULL
    result = ResultFile(
        args.result,
        contender="retrain-loop",
        dataset=args.dataset,
        size=size,
        goal=args.goal,
        epochs=epochs,
        goal_met=False,
        trials=0,
    )
    data = load_split(args.dataset, size, args.seed, args.min_faces)
    x = {name: preprocess(images) for name, images in data.images.items()}
    best_val, model, started = -1.0, None, time.perf_counter()
    layers = FIRST_LAYERS
    while layers <= max_layers and time.monotonic() < deadline:
        keras.utils.set_random_seed(args.seed)
        model = build(args.weights, size, data.n_classes, layers)
        keeper = best_weights_callback()
        model.fit(
            x["train"],
            data.labels["train"],
            validation_data=(x["val"], data.labels["val"]),
            epochs=epochs,
            batch_size=32,
            verbose=0,
            callbacks=[keeper, deadline_callback(deadline)],
        )
        best_val = max(best_val, keeper.best)
        met = keeper.best >= args.goal
        result.update(
            trials=layers - FIRST_LAYERS + 1,
            best_val=best_val,
            goal_met=met,
            last_layers=layers,
            search_s=time.perf_counter() - started,
        )
        if met:
            break
        layers += 1
    if model is not None:
        _, test = model.evaluate(x["test"], data.labels["test"], batch_size=32, verbose=0)
        result.update(test=float(test))
    result.update(out_of_budget=time.monotonic() > deadline, load_s=data.load_seconds)


if __name__ == "__main__":
    main()
