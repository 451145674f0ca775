"""nbclient runs examples/faces.ipynb end to end on the forkpoint kernel, as `jupyter nbconvert
--execute` or a CI job would, and the outputs are what the notebook promises."""

from __future__ import annotations

from pathlib import Path

import pytest
from kernel_client import install_spec

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).parent.parent / "examples" / "faces.ipynb"


def _text(cell: dict) -> str:  # type: ignore[type-arg]
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] == "error":
            parts.append("\n".join(out["traceback"]))
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


def test_the_faces_notebook_runs_with_its_failing_cell_rolled_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_spec(tmp_path, monkeypatch)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="forkpoint", allow_errors=True, timeout=300)
    client.execute(cwd=str(tmp_path))
    code = [c for c in nb.cells if c.cell_type == "code"]
    texts = [_text(c) for c in code]
    errors = [i for i, c in enumerate(code) if any(o["output_type"] == "error" for o in c.outputs)]
    assert len(errors) == 1, texts  # the buggy draw_boxes, and only it
    failed = texts[errors[0]]
    assert "24 frames went to 1 file(s)" in failed and "rolled back to [" in failed
    assert "pure green pixels on the frames: 0" in texts[errors[0] + 1]  # its boxes undone too
    assert any("wrote 24 frames: frame000.jpg .. frame023.jpg" in t for t in texts)
    pngs = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 1
    assert any("(detected)" in t and "<- head" in t for t in texts)  # %tree
    assert "24 frames of faces; pure green pixels: 0" in texts[-1]  # rewound to before drawing
    found = [t for t in texts if "found a face in" in t]
    assert found and "found a face in 0 " not in found[0]
