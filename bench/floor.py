"""The floor: one forward pass of the frozen VGG16 base over the whole data set.

Any frozen-base search has to pay this once; ``mlops tune`` pays it once per data set (then
reads the feature cache), KerasTuner and the retrain loop pay it every epoch. The process
also loads the data and the weights the way ``mlops tune`` does, so its wall time is the
least a cold frozen-base search command can take; the pass alone is reported beside it.

Run: ``python -m bench.floor --dataset lfw --result floor.json``
"""

from __future__ import annotations

import time

from bench.data import DATASETS, ResultFile, contender_parser, data_options, face_modules
from bench.machine_peak import conv_macs, pass_gflops


def main(argv: list[str] | None = None) -> None:
    """Load the faces, build the base, time the forward pass over every image."""
    args = contender_parser(__doc__ or "").parse_args(argv)
    size = args.size or DATASETS[args.dataset]
    result = ResultFile(args.result, contender="floor", dataset=args.dataset, size=size)
    started = time.perf_counter()
    manifest, faces_module, backbone = face_modules()
    faces = faces_module.load_faces(data_options(manifest, args.dataset, size, args.min_faces))
    loaded = time.perf_counter()
    base = backbone.load_base(str(args.weights), size, args.seed)
    built = time.perf_counter()
    features = backbone.extract_features(base, faces.images, progress=False)
    passed = time.perf_counter()
    macs = conv_macs(base)  # counted on the base just timed: no second model, the peak is the runner's
    result.update(
        n_images=len(faces.labels),
        n_classes=len(faces.names),
        feature_dim=int(features.shape[1]),
        load_s=loaded - started,
        base_s=built - loaded,
        pass_s=passed - built,
        images_per_s=len(faces.labels) / (passed - built),
        macs_per_image=macs,
        pass_gflops=pass_gflops(macs, len(faces.labels), passed - built),
        goal_met=None,
        trials=0,
    )


if __name__ == "__main__":
    main()
