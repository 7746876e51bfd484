"""What makes a benchmark row's time not a clean result (bench/report.py ``flags``, bench/run.py)."""

from __future__ import annotations

import time

from bench.report import flags
from bench.run import cpu_busy_seconds


def test_a_load_the_run_made_itself_is_said_but_not_held_against_it() -> None:
    own = {"overloaded": True, "load_max": 3.6, "others_cores": 0.04}  # mlops tune --workers 2
    assert flags([own], 2) == "1 run(s) under load > 2 (max 3.6), its own processes"


def test_a_run_beside_other_work_is_flagged_in_bold() -> None:
    beside = {"overloaded": True, "load_max": 4.1, "others_cores": 0.9}
    expected = "**1 run(s) under load > 2 (max 4.1)**; **1 run(s) beside other work (up to 0.90 cores)**"
    assert flags([beside], 2) == expected
    quiet_load = {"overloaded": False, "load_max": 1.9, "others_cores": 0.5}  # niced work at a low load
    assert flags([quiet_load], 2) == "**1 run(s) beside other work (up to 0.50 cores)**"


def test_older_results_without_the_cpu_figure_keep_the_load_rule() -> None:
    assert flags([{"overloaded": True, "load_max": 4.8}], 2) == "**1 run(s) under load > 2 (max 4.8)**"
    assert flags([{"out_of_budget": True}, {"overloaded": False, "load_max": 1.0}], 2) == "**1 cut by the budget**"


def test_busy_cpu_time_grows_while_this_process_works() -> None:
    before, started = cpu_busy_seconds(), time.process_time()
    while time.process_time() - started < 0.5:
        pass
    assert cpu_busy_seconds() - before >= 0.4
