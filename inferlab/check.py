"""Setup check a learner runs before class: ``python -m inferlab.check`` (or ``il.check.run()`` in a cell).

It prints the versions that matter, the cores and accelerators torch sees, whether the bundled model
loads and answers offline, and a short calibration: this machine's read bandwidth and matrix-multiply
speed beside the rough range of laptop CPUs, and whether the machine looks busy (the same small workload
timed twice disagrees). It takes a few seconds and never downloads anything.
"""
from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field

# Rough ranges for laptop CPUs of recent years (2-8 cores, dual-channel DDR4/DDR5/LPDDR5): a reading far
# outside them usually means a busy machine, a power-saving mode, or a desktop/server part.
LAPTOP_READ_GBPS = (8.0, 120.0)
LAPTOP_MATMUL_GFLOPS = (30.0, 2000.0)
READ_BYTES = 512 * 2 ** 20
MATMUL_N = 1024


@dataclass
class CheckReport:
    lines: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    def add(self, name: str, value) -> None:
        self.lines.append(f"{name:<22} {value}")

    def __str__(self):
        text = "\n".join(self.lines)
        if self.warnings:
            text += "\n\n" + "\n".join(f"⚠ {w}" for w in self.warnings)
        else:
            text += "\n\nAll checks passed: this machine is ready for the lessons."
        return text


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def _accelerators(torch) -> str:
    found = []
    if torch.cuda.is_available():
        found += [f"CUDA: {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("Apple MPS")
    return ", ".join(found) or "none (the lessons run on the CPU)"


def run(calibrate: bool = True) -> CheckReport:
    """Collect the report (``calibrate=False`` skips the timed part, for a quick look)."""
    if not isinstance(calibrate, bool):
        raise TypeError(f"calibrate must be True or False, got {calibrate!r}")
    import torch

    from .core.generate import generate
    from .core.pretrained import load_pretrained
    from .measure import timing

    report = CheckReport()
    report.add("Python", platform.python_version())
    for name in ("inferlab", "torch", "numpy", "matplotlib", "ipywidgets", "jupyterlab", "nbval"):
        report.add(name, _version(name))
    if sys.version_info < (3, 10):
        report.warnings.append("Python 3.10 or newer is needed.")
    report.add("CPU", timing.cpu_model())
    report.add("cores", f"{os.cpu_count()} logical, torch uses {torch.get_num_threads()} threads")
    report.add("accelerator", _accelerators(torch))

    try:
        model, tok = load_pretrained()
        res = generate(model, tok, "The return value", max_new_tokens=8)
        report.add("bundled model", f"loads and answers offline ({len(res.tokens)} tokens generated)")
    except Exception as e:  # noqa: BLE001 -- the check reports every failure instead of stopping
        report.warnings.append(f"the bundled model did not load or answer: {type(e).__name__}: {e}")

    if calibrate:
        calib = timing.calibrate()
        report.add("calibration", str(calib))
        if calib.busy:
            report.warnings.append("The machine looks busy: close other programs (browser tabs, video calls) "
                                   "before class, or expect timings to jump between runs.")
        big = torch.full((READ_BYTES // 4,), 1.0)   # larger than any CPU's last-level cache
        read = READ_BYTES / timing.measure(big.sum, warmup=1, repeats=5).median_s / 1e9
        del big
        a = torch.randn(MATMUL_N, MATMUL_N)
        flops = 2 * MATMUL_N ** 3 / timing.measure(lambda: a @ a, warmup=1, repeats=5).median_s / 1e9
        for name, value, unit, (low, high) in (("read bandwidth", read, "GB/s", LAPTOP_READ_GBPS),
                                               ("float32 matmul", flops, "GFLOP/s", LAPTOP_MATMUL_GFLOPS)):
            verdict = "within" if low <= value <= high else "outside"
            report.add(name, f"{value:.1f} {unit} ({verdict} the rough laptop range {low:g}-{high:g})")
            if verdict == "outside" and value < low:
                report.warnings.append(f"{name} is below the laptop range: is the machine busy or on battery saving?")
    return report


def main() -> None:
    print(run())


if __name__ == "__main__":
    main()
