"""bench.machine_peak: CPU flags, VGG16's multiply-adds counted by hand, the efficiency arithmetic."""

from __future__ import annotations

import pytest

from bench.machine_peak import (
    cpu_info,
    floor_efficiency,
    matmul_peak,
    parse_cpuinfo,
    vector_extensions,
    vgg16_macs,
)

# A Sapphire Rapids-like flags line (trimmed) and a Skylake client one: AVX2 and FMA, no AVX-512.
SAPPHIRE = "fpu sse2 avx fma avx2 avx512f avx512bw avx512_vnni avx512_bf16 avx_vnni amx_bf16 amx_tile amx_int8"
SKYLAKE = "fpu sse2 avx fma avx2 bmi2 adx"

# VGG16's conv base: per block, the output channels of its 3x3 'same' convolutions; the
# spatial side halves at each block (max-pool after the previous block).
BLOCKS = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]


def hand_macs(size: int) -> int:
    """H * W * 3 * 3 * C_in * C_out summed over the 13 convolutions, written out independently."""
    total, channels, side = 0, 3, size
    for block in BLOCKS:
        for out in block:
            total += side * side * 9 * channels * out
            channels = out
        side //= 2
    return total


def test_vector_extensions_read_from_flags() -> None:
    found = vector_extensions(set(SAPPHIRE.split()))
    assert all(found.values()), found
    found = vector_extensions(set(SKYLAKE.split()))
    assert found["avx2"] and found["fma"]
    assert not any(
        found[name] for name in ("avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
    )


def test_parse_cpuinfo_counts_visible_physical_cores() -> None:
    # Two cores with two hyperthreads each: logical 0 and 2 share core 0, 1 and 3 share core 1.
    blocks = [
        f"processor\t: {cpu}\nmodel name\t: Test CPU\nphysical id\t: 0\ncore id\t\t: {cpu % 2}\nflags\t\t: {SKYLAKE}"
        for cpu in range(4)
    ]
    text = "\n\n".join(blocks) + "\n"
    parsed = parse_cpuinfo(text)
    assert parsed["model"] == "Test CPU" and parsed["physical_cores"] == 2 and "avx2" in parsed["flags"]
    assert parse_cpuinfo(text, visible={0, 2})["physical_cores"] == 1
    assert parse_cpuinfo("")["physical_cores"] is None


def test_cpu_info_of_this_machine() -> None:
    info = cpu_info()
    assert info["model"] and info["logical_cores"] >= 1
    assert set(info["extensions"]) >= {"avx2", "fma", "avx512f", "avx512_vnni", "amx_tile"}


def test_vgg16_macs_match_the_hand_count() -> None:
    assert hand_macs(224) == 15_346_630_656  # the published ~15.3 GMACs of VGG16's conv layers
    assert vgg16_macs(224) == hand_macs(224)
    assert vgg16_macs(96) == hand_macs(96)


def test_floor_efficiency_arithmetic() -> None:
    macs = hand_macs(96)
    done = floor_efficiency(n_images=1000, size=96, pass_seconds=20.0, peak_gflops=400.0)
    assert done["macs_per_image"] == macs
    assert done["pass_gflops"] == pytest.approx(2 * macs * 1000 / 20.0 / 1e9)
    assert done["efficiency"] == pytest.approx(done["pass_gflops"] / 400.0)
    assert 0.68 < done["efficiency"] < 0.72  # 281.9 GFLOP/s of 400


def test_matmul_peak_measures_both_runtimes() -> None:
    peak = matmul_peak(seconds=0.5, n=256)
    assert peak["tf_gflops"] > 0 and peak["numpy_gflops"] > 0
    assert peak["n"] == 256 and peak["threads"] >= 1 and len(peak["load_avg"]) == 3


def test_report_flags_a_floor_below_half_the_peak() -> None:
    from bench.report import physical_limit_lines

    header = {"cpu": {"model": "Test CPU", "physical_cores": 2, "logical_cores": 2, "extensions": {"avx2": True}}}
    peak = {"tf_gflops": 200.0, "numpy_gflops": 150.0, "n": 2048, "threads": 2}
    floors = [
        {"dataset": "lfw", "size": 96, "n_images": 3023, "macs_per_image": 2_818_768_896, "pass_gflops": 136.0},
        {"dataset": "olivetti", "size": 64, "n_images": 400, "macs_per_image": 1_252_786_176, "pass_gflops": 60.0},
        {"dataset": "lfw", "size": 96, "n_images": 3023},  # a floor from before pass_gflops was recorded
        {
            "dataset": "lfw",
            "size": 96,
            "n_images": 778,
            "role": "scaling-images",
            "fraction": 0.25,
            "macs_per_image": 2_818_768_896,
            "pass_gflops": 230.0,
        },
    ]
    lines = physical_limit_lines(header, peak, floors)
    assert lines[0].startswith("- CPU: Test CPU") and "avx2" in lines[0]
    assert "200.0 GFLOP/s" in lines[1]
    assert "68% of the peak" in lines[2] and "below 50%" not in lines[2]
    assert lines[3].endswith("30% of the peak **below 50%**")
    assert "scaling-images 25%" in lines[4] and "115% of the peak (above the measured peak" in lines[4]
    assert len(lines) == 5
    assert physical_limit_lines({}, {}, floors) == []
