"""Job start-up: a stage's module imports only the heavy libraries that stage uses.

Every workflow job is a fresh ``python -m clumpcat`` process, so an import a
stage does not need is paid once per shard and stage (torch: seconds; photutils'
segmentation, with scipy.signal: about one). Each case runs in its own
interpreter, so that nothing imported by other tests hides the import.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

CASES = [
    # Photometry and post-processing read the stored host segments.
    ("clumpcat.photometry.apertures", "photutils.segmentation"),
    ("clumpcat.postprocess.clumps", "photutils.segmentation"),
    # Post-processing's NMS is numpy: no torch.
    ("clumpcat.postprocess.clumps", "torch"),
    # Detection needs no scipy (binomial intervals and PSF fits live elsewhere).
    ("clumpcat.detection.inference", "scipy"),
    # The segment module defers photutils to the job that segments.
    ("clumpcat.survey.segments", "photutils"),
]


@pytest.mark.parametrize(("module", "heavy"), CASES)
def test_stage_module_leaves_unused_libraries_unimported(module, heavy):
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m == {heavy!r} or m.startswith({heavy + '.'!r})))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", f"importing {module} imports {done.stdout.strip()}"
