"""KerasTuner on our cached, standardised features: what caching buys, apart from our search.

The same split and the same frozen VGG16 base as every contender, but the base runs once:
its global-average-pooled features of the train, validation and test images are extracted
with the face model's own function (``backbone.feature_extractor``, the one ``mlops tune``
fills its feature cache with; the pass is per image, so extracting split by split gives the
same vectors, bit for bit on Olivetti), then standardised as the face model's head does
(``models/face_vgg16/model.py:build_head``): a ``keras.layers.Normalization`` with the
train split's per-feature mean and variance + 1e-6, i.e. ``(x - mean_train) / sqrt(var_train
+ 1e-6)`` on every split; statistics from train only. Ours puts that layer inside the head;
here it is applied once to the arrays (an element-wise map, so the same numbers).

KerasTuner's ``RandomSearch`` (or ``--tuner hyperband``) then searches a dense head alone on
those vectors, with everything else as ``bench/kerastuner_contender.py``: its space (dense
layers 1-5, units 32-512 log, dropout 0-0.6, optimizer adam/adamw/rmsprop/sgd, learning rate
1e-4-3e-2 log; batch 32, ReLU), its trial cap, epochs and patience (``FULL``, ``QUICK``), its
goal stop and its wall-clock deadline. Against kerastuner-random it measures the cache; against
ours (warm) it measures our search and our compiled head fit.

Run: ``python -m bench.kerastuner_cached --tuner random --dataset lfw --result ktc.json``
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import DATASETS, ResultFile, contender_parser, deadline_callback, face_modules, load_split
from bench.kerastuner_contender import FULL, QUICK, best_of, goal_tuner
from pipeline.sdk.keras.dense_head import make_optimizer


def extract(images: dict[str, np.ndarray], weights: Path, size: int, seed: int) -> dict[str, np.ndarray]:
    """Pooled VGG16 features per split, by the face model's own base and extraction function."""
    _, _, backbone = face_modules()
    extractor = backbone.feature_extractor(backbone.load_base(str(weights), size, seed))
    return {name: extractor(split) for name, split in images.items()}


def standardise(features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every split through the face head's ``Normalization`` layer, fitted on the train split.

    Args:
        features: pooled features per split (``train`` among them).

    Returns:
        The standardised features per split (float32).
    """
    import keras

    train = features["train"]
    # The very layer build_head puts first in our head, with the same statistics.
    scaling = keras.layers.Normalization(mean=train.mean(axis=0), variance=train.var(axis=0) + 1e-6)
    return {name: np.asarray(scaling(split), dtype=np.float32) for name, split in features.items()}


def hypermodel(feature_dim: int, n_classes: int) -> Any:
    """The build function: feature vector in, searched dense layers, softmax; as kerastuner_contender's head."""
    import keras

    def build(hp: Any) -> Any:
        inputs = keras.Input((feature_dim,))
        x = inputs
        dropout = hp.Float("dropout", 0.0, 0.6)
        for i in range(hp.Int("n_layers", 1, 5)):
            x = keras.layers.Dense(hp.Int(f"units_{i}", 32, 512, sampling="log"), activation="relu")(x)
            x = keras.layers.Dropout(dropout)(x)
        outputs = keras.layers.Dense(n_classes, activation="softmax")(x)
        model = keras.Model(inputs, outputs)
        optimizer = make_optimizer(
            hp.Choice("optimizer", ["adam", "adamw", "rmsprop", "sgd"]),
            hp.Float("learning_rate", 1e-4, 3e-2, sampling="log"),
        )
        model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    return build


def make_tuner(
    kind: str, build: Any, budget: tuple[int, int], stop: tuple[float, float], on_trial: Any, **common: Any
) -> Any:
    """A goal-stopping ``RandomSearch`` or ``Hyperband`` (``max_epochs=epochs, factor=3``), as kerastuner_contender's.

    Args:
        kind: ``random`` or ``hyperband``.
        build: the hypermodel.
        budget: the trial cap (Hyperband's oracle honours ``max_trials`` too) and the epochs per
            trial (Hyperband: ``max_epochs``).
        stop: the goal (stop after the first trial whose best ``val_accuracy`` reaches it) and the
            ``time.monotonic()`` deadline after which no trial starts.
        on_trial: called with the oracle after every trial.
        common: the tuner's other arguments (``seed``, ``directory``).
    """
    import keras_tuner as kt

    trials, epochs = budget
    goal, deadline = stop
    common.update(objective="val_accuracy", project_name=kind, overwrite=True)
    if kind == "random":
        return goal_tuner(kt.RandomSearch, goal, deadline, on_trial)(build, max_trials=trials, **common)
    tuner = goal_tuner(kt.Hyperband, goal, deadline, on_trial)(build, max_epochs=epochs, factor=3, **common)
    tuner.oracle.max_trials = trials  # Hyperband takes no max_trials; the oracle honours it
    return tuner


def main(argv: list[str] | None = None) -> None:
    """Extract and standardise once; search heads until the goal, the trial cap or the budget; score on test."""
    parser = contender_parser(__doc__ or "")
    parser.add_argument("--tuner", choices=("random", "hyperband"), default="random")
    args = parser.parse_args(argv)
    import keras

    size = args.size or DATASETS[args.dataset]
    deadline = time.monotonic() + args.budget_seconds
    trials, epochs, patience = QUICK if args.quick else FULL
    result = ResultFile(
        args.result,
        contender="kerastuner-cached" + ("-hyperband" if args.tuner == "hyperband" else ""),
        dataset=args.dataset,
        size=size,
        goal=args.goal,
        trial_budget=trials,
        epochs=epochs,
        goal_met=False,
    )
    keras.utils.set_random_seed(args.seed)
    data = load_split(args.dataset, size, args.seed, args.min_faces)
    started = time.perf_counter()
    x = standardise(extract(data.images, args.weights, size, args.seed))
    result.update(load_s=data.load_seconds, features_s=time.perf_counter() - started)
    keras.utils.set_random_seed(args.seed)  # load_base reseeded; the search starts from the seed as the others do
    search_started = time.perf_counter()

    def on_trial(oracle: Any) -> None:
        count, best = best_of(oracle)
        result.update(
            trials=count,
            best_val=best,
            goal_met=bool(best is not None and best >= args.goal),
            search_s=time.perf_counter() - search_started,
        )

    build = hypermodel(x["train"].shape[1], data.n_classes)
    directory = Path(tempfile.mkdtemp(prefix="ktc-"))
    tuner = make_tuner(
        args.tuner, build, (trials, epochs), (args.goal, deadline), on_trial, seed=args.seed, directory=str(directory)
    )
    tuner.search(
        x["train"],
        data.labels["train"],
        validation_data=(x["val"], data.labels["val"]),
        epochs=epochs,
        batch_size=32,
        callbacks=[keras.callbacks.EarlyStopping("val_accuracy", patience=patience), deadline_callback(deadline)],
        verbose=0,
    )
    on_trial(tuner.oracle)
    _, test = tuner.get_best_models(1)[0].evaluate(x["test"], data.labels["test"], batch_size=32, verbose=0)
    result.update(test=float(test), out_of_budget=time.monotonic() > deadline)
    shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
