"""The onnxruntime + Pillow snippet of docs/DEPLOY.md runs as written on an exported model."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from _deploy_helpers import onnx_detector, shape_pictures
from PIL import Image

DEPLOY = Path(__file__).resolve().parents[2] / "docs" / "DEPLOY.md"


def snippet() -> str:
    """The python block after the ``<!-- snippet: deploy -->`` marker."""
    found = re.search(r"<!-- snippet: deploy -->\s*```python\n(.*?)```", DEPLOY.read_text(), re.S)
    assert found, "docs/DEPLOY.md lost its marked snippet"
    return found.group(1)


def test_readme_snippet_draws_the_detections(tiny_onnx, tmp_path):
    code = snippet()
    assert len([line for line in code.splitlines() if line.strip() and not line.startswith("import")]) <= 16
    picture = shape_pictures(1, (200, 300), seed=4)[0]
    Image.fromarray(picture).save(tmp_path / "picture.jpg", quality=95)
    (tmp_path / "model.onnx").symlink_to(tiny_onnx)
    # The tiny test model is not confident: draw what it finds above 0.05 instead of 0.3.
    assert "score > 0.3" in code
    (tmp_path / "snippet.py").write_text(code.replace("score > 0.3", "score > 0.05"))
    subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, check=True, timeout=120)
    drawn = np.asarray(Image.open(tmp_path / "detections.png"))
    original = np.asarray(Image.open(tmp_path / "picture.jpg"))
    assert drawn.shape == original.shape
    expected = onnx_detector(tiny_onnx, score_threshold=0.05)([original])[0]
    assert len(expected["scores"]) > 0 and (drawn != original).any(), "boxes were drawn"
    # The top box's outline is red where the detector puts it (picture pixels).
    x1, y1 = (int(round(float(v))) for v in expected["boxes"][0, :2])
    window = drawn[max(y1 - 2, 0):y1 + 3, max(x1 - 2, 0):x1 + 3].reshape(-1, 3)
    assert ((window[:, 0] == 255) & (window[:, 1] == 0) & (window[:, 2] == 0)).any()
