"""The capacity model's arithmetic: it scales with the peak and reads measured reports."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.capacity import MEASURED, Machine, Peak, main, measured, plan


def test_ten_times_the_peak_needs_ten_times_the_cores_and_rows() -> None:
    one = plan(Peak(), Machine(), MEASURED)
    ten = plan(Peak(sessions=1_000_000), Machine(), MEASURED)
    assert round(one.peak.initiates_per_s) == 1_667  # the design document's 1,666/s
    assert abs(ten.api_cores - 10 * one.api_cores) < 1e-6
    assert abs(ten.crypto_cores - 10 * one.crypto_cores) < 1e-6
    assert abs(ten.postgresql_rows_per_s - 10 * one.postgresql_rows_per_s) < 1e-6
    assert 10 * (one.api_instances - 1) <= ten.api_instances <= 10 * one.api_instances
    assert one.redis_masters >= 3  # a Cluster's minimum
    # PBKDF2 dominates: verify's crypto cores outweigh every event loop.
    assert one.crypto_cores > 3 * one.api_cores


def test_measured_reports_replace_the_defaults_and_a_passkey_is_its_difference(
    tmp_path: Path,
) -> None:
    reports = tmp_path / "cpu.json"
    lines = [
        {"scenario": "verify", "cpu_ms_per_request": {"api event loop": 2.0, "redis": 0.2}},
        {"scenario": "verify-passkey", "cpu_ms_per_request": {"api event loop": 3.5, "redis": 0.2}},
        "not a report",
    ]
    reports.write_text("\n".join(json.dumps(x) for x in lines))
    cpu = measured([reports])
    assert cpu["verify"] == {"api event loop": 2.0, "redis": 0.2}
    assert cpu["passkey"] == {"api event loop": 1.5, "redis": 0.0}
    assert cpu["initiate"] == MEASURED["initiate"]
    plans = main(["--measured", str(reports), "--cores-per-instance", "8"])
    assert plans[1].peak.sessions == 10 * plans[0].peak.sessions
