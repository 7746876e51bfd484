"""The machine's physical limit: its CPU, its achieved float32 GEMM rate, and VGG16's arithmetic.

The floor (one VGG16 pass over the data) is the benchmark's yardstick; this module says how
far that pass is from what the CPU can do at all. ``matmul_peak`` measures the best float32
matrix product TensorFlow (the runtime the VGG16 extraction uses, default threads) reaches
here, ``vgg16_macs`` counts the conv base's multiply-adds, and ``floor_efficiency`` turns a
timed pass into achieved GFLOP/s and a fraction of that peak. The peak is measured, not a
datasheet figure: it already includes the clock, the vector units and the threads this
process actually gets.

Run: ``.venv/bin/python -m bench.machine_peak --size 96 [--images 3023 --pass-seconds 125.3]``
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CPUINFO = Path("/proc/cpuinfo")
# Extension name -> the /proc/cpuinfo flag that announces it.
EXTENSIONS = {
    "avx2": "avx2",
    "fma": "fma",
    "avx512f": "avx512f",
    "avx512_vnni": "avx512_vnni",
    "avx_vnni": "avx_vnni",
    "avx512_bf16": "avx512_bf16",
    "amx_tile": "amx_tile",
    "amx_bf16": "amx_bf16",
}


def vector_extensions(flags: set[str]) -> dict[str, bool]:
    """Which of the vector extensions that matter for float32/bf16 GEMM ``flags`` lists.

    Args:
        flags: the words of a ``/proc/cpuinfo`` ``flags`` line.

    Returns:
        Extension name -> present, for every name in ``EXTENSIONS``.
    """
    return {name: flag in flags for name, flag in EXTENSIONS.items()}


def parse_cpuinfo(text: str, visible: set[int] | None = None) -> dict[str, Any]:
    """Model name, flags and physical cores from the text of ``/proc/cpuinfo``.

    Args:
        text: the file's content.
        visible: logical CPU numbers to count (this process' affinity); ``None``: all.

    Returns:
        ``model`` (or ``None``), ``flags`` (a set, from the first processor) and
        ``physical_cores`` (distinct (physical id, core id) pairs among the visible CPUs, or
        ``None`` when the file does not give core ids, as in some VMs and containers).
    """
    model: str | None = None
    flags: set[str] = set()
    cores: set[tuple[str, str]] = set()
    for block in text.strip().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        if model is None and "model name" in fields:
            model = fields["model name"]
        if not flags and "flags" in fields:
            flags = set(fields["flags"].split())
        processor = fields.get("processor", "")
        if visible is not None and processor.isdigit() and int(processor) not in visible:
            continue
        if "core id" in fields:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
    return {"model": model, "flags": flags, "physical_cores": len(cores) or None}


def cpu_info() -> dict[str, Any]:
    """The CPU this process runs on: model, cores it may use, vector extensions. Cheap: no timing."""
    visible = os.sched_getaffinity(0)
    parsed = parse_cpuinfo(CPUINFO.read_text() if CPUINFO.is_file() else "", visible)
    return {
        "model": parsed["model"] or platform.processor() or "?",
        "physical_cores": parsed["physical_cores"],
        "logical_cores": len(visible),
        "extensions": vector_extensions(parsed["flags"]),
    }


def _best_seconds(call: Callable[[], object], seconds: float, min_repeats: int = 3) -> float:
    """The fastest of repeated ``call()``s, repeated for ``seconds`` (at least ``min_repeats`` times)."""
    call()  # warm-up: tracing, thread pools, page faults, weight packing
    best, started, repeats = float("inf"), time.perf_counter(), 0
    while repeats < min_repeats or time.perf_counter() - started < seconds:
        begin = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - begin)
        repeats += 1
    return best


def tf_threads() -> int:
    """TensorFlow's intra-op threads: its setting, or (0, the default) the CPUs it may use."""
    import tensorflow as tf

    return tf.config.threading.get_intra_op_parallelism_threads() or len(os.sched_getaffinity(0))


def matmul_peak(seconds: float = 10.0, n: int = 2048) -> dict[str, Any]:
    """The achieved float32 GEMM rate of TensorFlow (default threads) and of numpy on this machine.

    A square ``n`` x ``n`` product is ``2 n^3`` flops. The matrices are arguments of the
    ``tf.function`` (not captured constants, which TF could fold), and each call returns a
    reduction of the product fetched with ``.numpy()``, so the product is really computed
    before the clock stops. Best of the repetitions: the limit, not the average under load.

    Args:
        seconds: time spent repeating, half for TensorFlow and half for numpy.
        n: the matrices' side.

    Returns:
        ``tf_gflops``, ``numpy_gflops``, ``n``, ``threads`` (TensorFlow's intra-op threads) and
        ``load_avg`` right after: other work on the cores lowers the figure, and this says so.
    """
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    ta, tb = tf.constant(a), tf.constant(b)

    @tf.function
    def product_sum(x: Any, y: Any) -> Any:
        return tf.reduce_sum(tf.matmul(x, y))

    flops = 2.0 * n**3
    tf_best = _best_seconds(lambda: product_sum(ta, tb).numpy(), seconds / 2)
    numpy_best = _best_seconds(lambda: float(np.dot(a, b).sum()), seconds / 2)
    return {
        "tf_gflops": flops / tf_best / 1e9,
        "numpy_gflops": flops / numpy_best / 1e9,
        "n": n,
        "threads": tf_threads(),
        "load_avg": os.getloadavg(),
    }


def peak_record() -> dict[str, Any]:
    """The runner's ``peak`` record: ``matmul_peak()`` with its default duration and size."""
    return {"record": "peak", **matmul_peak()}


def conv_macs(model: Any) -> int:
    """Multiply-adds of every Conv2D layer of a built Keras model: H_out * W_out * kh * kw * C_in * C_out.

    Only the convolutions: biases, ReLUs and max-pools add well under 1% to VGG16's count.
    """
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, _ = layer.output.shape
            total += int(height) * int(width) * int(np.prod(layer.kernel.shape))
    return total


@functools.lru_cache(maxsize=8)
def vgg16_macs(size: int) -> int:
    """Multiply-adds of the VGG16 conv base (``include_top=False``) on one ``size`` x ``size`` RGB image.

    Counted on a real ``keras.applications.VGG16(weights=None)``: 13 3x3 'same' convolutions
    and 5 max-pools, so the layer shapes are the ones the extraction runs. About 15.35e9 at 224 px.
    """
    import keras

    base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(size, size, 3))
    return conv_macs(base)


def pass_gflops(macs_per_image: int, n_images: int, pass_seconds: float) -> float:
    """Achieved GFLOP/s of a forward pass: 2 flops per multiply-add."""
    return 2.0 * macs_per_image * n_images / pass_seconds / 1e9


def floor_efficiency(n_images: int, size: int, pass_seconds: float, peak_gflops: float) -> dict[str, float]:
    """How close a VGG16 pass over ``n_images`` at ``size`` px came to the measured peak.

    Returns:
        ``macs_per_image``, ``pass_gflops`` (achieved) and ``efficiency`` (its fraction of
        ``peak_gflops``).
    """
    macs = vgg16_macs(size)
    achieved = pass_gflops(macs, n_images, pass_seconds)
    return {"macs_per_image": macs, "pass_gflops": achieved, "efficiency": achieved / peak_gflops}


def cpu_line(info: dict[str, Any]) -> str:
    """One line: model, cores, and the extensions present."""
    present = [name for name, there in info["extensions"].items() if there]
    return (
        f"{info['model']}; {info['physical_cores'] or '?'} physical / {info['logical_cores']} logical cores visible; "
        f"{', '.join(present) or 'no AVX2/AVX-512/AMX'}"
    )


def main(argv: list[str] | None = None) -> None:
    """Print the CPU, the measured peak, the MACs and (with a timed pass) the efficiency."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96, help="input side in pixels (default 96, LFW's)")
    parser.add_argument("--images", type=int, default=None, help="images in a timed pass")
    parser.add_argument("--pass-seconds", type=float, default=None, help="that pass's time")
    parser.add_argument("--seconds", type=float, default=10.0, help="time spent measuring the peak")
    args = parser.parse_args(argv)
    print(f"cpu: {cpu_line(cpu_info())}", flush=True)
    peak = matmul_peak(args.seconds)
    print(
        f"peak: float32 GEMM {peak['n']}x{peak['n']}: TensorFlow {peak['tf_gflops']:.1f} GFLOP/s "
        f"({peak['threads']} threads), numpy {peak['numpy_gflops']:.1f} GFLOP/s; "
        f"load average after {peak['load_avg'][0]:.1f}"
    )
    macs = vgg16_macs(args.size)
    print(f"VGG16 conv base at {args.size} px: {macs / 1e9:.3f} GMACs ({2 * macs / 1e9:.3f} GFLOP) per image")
    if args.images and args.pass_seconds:
        done = floor_efficiency(args.images, args.size, args.pass_seconds, peak["tf_gflops"])
        print(
            f"pass: {args.images} images in {args.pass_seconds:.1f} s = {done['pass_gflops']:.1f} GFLOP/s, "
            f"{done['efficiency']:.0%} of the TensorFlow peak"
        )


if __name__ == "__main__":
    main()
