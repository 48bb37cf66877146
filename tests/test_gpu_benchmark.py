"""benchmarks/gpu.py is not dead code: it runs on the CPU with the test suite's tiny shapes (`--tiny`), building
each prior the way the GPU run builds the full-size ones. No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import gpu


def test_the_gpu_benchmark_runs_on_tiny_models(tmp_path: Path, capsys) -> None:
    out = tmp_path / "gpu.json"
    report = gpu.main(["--tiny", "--device", "cpu", "--steps", "2", "--repeats", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == report and report["tiny"] and report["device"] == "cpu"
    rows = {row["prior"]: row for row in report["rows"]}
    assert set(rows) == set(gpu.PRIORS)
    assert [rows[p]["template"] for p in gpu.PRIORS] == ["shade-sd", "shade-iclight", "shade-sdxl"]
    assert rows["sdxl"]["noise_samples"] == 2 and rows["iclight-fc"]["noise_samples"] == 4
    for row in rows.values():
        assert row["precision"] == "fp32" and row["steps_per_s"] > 0 and row["floor_ms"] > 0
        assert set(row["parts_ms"]) == {"prior network", "encoder fwd+bwd", "generator fwd+bwd"}
        assert 0 < row["encoder_share"] and row["memory"] == "process peak RSS"
    assert "| iclight-fc | fp32 | 64x64 | 4 |" in capsys.readouterr().out


def test_results_md_says_not_measured_until_a_full_size_run(tmp_path: Path, monkeypatch) -> None:
    from benchmarks import report

    monkeypatch.setattr(report, "GPU_RESULTS", tmp_path / "gpu-results.json")
    assert "**Not yet measured: no GPU has been lent to this work.**" in "\n".join(report.gpu_section())
    tiny = gpu.main(["--tiny", "--device", "cpu", "--priors", "sdxl", "--steps", "2", "--repeats", "1",
                     "--out", str(tmp_path / "gpu-results.json")])
    assert "Not yet measured" in "\n".join(report.gpu_section())  # tiny numbers are not GPU numbers
    (tmp_path / "gpu-results.json").write_text(json.dumps({**tiny, "tiny": False, "device": "NVIDIA X"}))
    section = "\n".join(report.gpu_section())
    assert "Measured on NVIDIA X" in section and "| sdxl | fp32 | 64x64 | 2 |" in section and "Not yet" not in section
