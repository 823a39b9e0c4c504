"""The README's quick-start snippet runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import xarray as xr

README = Path(__file__).resolve().parent.parent / "README.md"


def test_quick_start_snippet_runs_and_leaves_its_outputs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python block"
    script = tmp_path / "quickstart.py"
    script.write_text(blocks[0])
    out = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "train/loss=" in out.stdout
    run = tmp_path / "outputs" / "my-run"
    assert (run / "report.md").stat().st_size > 0
    assert (run / "metrics.csv").exists()
    ds = xr.open_dataset(run / "train.h5")
    assert ds.sizes["draw"] == 100
    ds.close()
