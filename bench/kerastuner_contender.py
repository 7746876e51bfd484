"""KerasTuner: ``RandomSearch`` or ``Hyperband`` over the same search space, base in the model.

The model is built as KerasTuner's and Keras' transfer-learning docs show it: the VGG16
base (the same face weights) frozen inside the Keras model, ``GlobalAveragePooling2D``,
then the searched dense head; so every epoch of every trial pays the base's forward pass.
The search space is ours minus what KerasTuner sets elsewhere: dense layers (1-5), units
per layer (32-512, log), dropout (0-0.6), learning rate (1e-4-3e-2, log), optimizer
(adam, adamw, rmsprop, sgd); batch size 32, ReLU. The search stops at the first trial
whose best-epoch ``val_accuracy`` reaches the goal, at the trial budget, or at the
wall-clock budget (checked after every batch and every trial).

Run: ``python -m bench.kerastuner_contender --tuner random --dataset lfw --result kt.json``
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.data import DATASETS, ResultFile, contender_parser, deadline_callback, load_split, preprocess
from pipeline.sdk.keras.dense_head import make_optimizer

# (trials, epochs per trial / Hyperband max_epochs, early-stopping patience)
FULL = (40, 20, 5)
QUICK = (2, 3, 3)


def hypermodel(weights: Path, size: int, n_classes: int) -> Any:
    """The build function: frozen VGG16 + GAP + searched dense layers + softmax."""
    import keras

    def build(hp: Any) -> Any:
        base = keras.applications.VGG16(weights=str(weights), include_top=False, input_shape=(size, size, 3))
        base.trainable = False
        inputs = keras.Input((size, size, 3))
        x = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
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


def goal_tuner(base_class: Any, goal: float, deadline: float, on_trial: Any) -> Any:
    """``base_class`` (a KerasTuner tuner) that stops at the first trial reaching ``goal``.

    KerasTuner 1.4 has no goal stop; ``Oracle.create_trial`` returns a STOPPED trial once
    ``len(trials) >= max_trials``, so ``on_trial_end`` caps ``max_trials`` at the trials run.
    """

    class GoalTuner(base_class):  # type: ignore[misc, valid-type]
        def on_trial_end(self, trial: Any) -> None:
            super().on_trial_end(trial)
            ended = self.oracle.trials[trial.trial_id]
            on_trial(self.oracle)
            score = ended.score if ended.score is not None else -1.0
            if score >= goal or time.monotonic() > deadline:
                self.oracle.max_trials = len(self.oracle.trials)

    return GoalTuner


def best_of(oracle: Any) -> tuple[int, float | None]:
    """Trials run so far and the best validation accuracy among them."""
    scores = [t.score for t in oracle.trials.values() if t.score is not None]
    return len(oracle.trials), float(max(scores)) if scores else None


def main(argv: list[str] | None = None) -> None:
    """Search until the goal, the trial budget or the wall-clock budget; score the best on test."""
    parser = contender_parser(__doc__ or "")
    parser.add_argument("--tuner", choices=("random", "hyperband"), default="random")
    args = parser.parse_args(argv)
    import keras
    import keras_tuner as kt

    size = args.size or DATASETS[args.dataset]
    deadline = time.monotonic() + args.budget_seconds
    trials, epochs, patience = QUICK if args.quick else FULL
    result = ResultFile(
        args.result,
        contender=f"kerastuner-{args.tuner}",
        dataset=args.dataset,
        size=size,
        goal=args.goal,
        trial_budget=trials,
        epochs=epochs,
        goal_met=False,
    )
    keras.utils.set_random_seed(args.seed)
    data = load_split(args.dataset, size, args.seed, args.min_faces)
    x = {name: preprocess(images) for name, images in data.images.items()}
    build = hypermodel(args.weights, size, data.n_classes)
    search_started = time.perf_counter()

    def on_trial(oracle: Any) -> None:
        count, best = best_of(oracle)
        result.update(
            trials=count,
            best_val=best,
            goal_met=bool(best is not None and best >= args.goal),
            search_s=time.perf_counter() - search_started,
        )

    directory = Path(tempfile.mkdtemp(prefix="kt-"))
    common = {
        "objective": "val_accuracy",
        "seed": args.seed,
        "directory": str(directory),
        "project_name": args.tuner,
        "overwrite": True,
    }
    if args.tuner == "random":
        tuner_class = goal_tuner(kt.RandomSearch, args.goal, deadline, on_trial)
        tuner = tuner_class(build, max_trials=trials, **common)
        fit_epochs = epochs
    else:
        tuner_class = goal_tuner(kt.Hyperband, args.goal, deadline, on_trial)
        tuner = tuner_class(build, max_epochs=epochs, factor=3, **common)
        tuner.oracle.max_trials = trials  # Hyperband takes no max_trials; the oracle honours it
        fit_epochs = epochs
    stop = keras.callbacks.EarlyStopping("val_accuracy", patience=patience)
    tuner.search(
        x["train"],
        data.labels["train"],
        validation_data=(x["val"], data.labels["val"]),
        epochs=fit_epochs,
        batch_size=32,
        callbacks=[stop, deadline_callback(deadline)],
        verbose=0,
    )
    on_trial(tuner.oracle)
    best_model = tuner.get_best_models(1)[0]
    _, test = best_model.evaluate(x["test"], data.labels["test"], batch_size=32, verbose=0)
    result.update(test=float(test), out_of_budget=time.monotonic() > deadline, load_s=data.load_seconds)
    shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
