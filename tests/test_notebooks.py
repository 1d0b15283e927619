"""What a new user runs first: the three notebooks, ``bigearth-stac show`` and the demo.

The notebooks are executed for real with nbclient in a kernel of this interpreter (each builds
its own catalog on a local S3 server it starts and stops); the checks read their outputs. The
demo runs as the user runs it, in a subprocess, and must leave no process behind.
"""

from __future__ import annotations

import base64
import io
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nbformat
import pytest
from click.testing import CliRunner
from nbclient import NotebookClient

from tests.s3fixtures import S3TestServer

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
CELL_TIMEOUT_S = 300
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

S2_ID = "S2A_MSIL2A_20170613T101031_87_48"  # Austria, arable land (real pair)
S1_ID = "S1A_IW_GRDH_1SDV_20170925T043256_35VPK_69_24"  # Finland, lake among forest (real pair)

# -- helpers -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kernel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kernelspec for *this* interpreter in a private folder (no user or system kernel can shadow it)."""
    from ipykernel.kernelspec import write_kernel_spec

    kernels = tmp_path_factory.mktemp("kernels")
    write_kernel_spec(kernels / "bigearth-stac-tests")
    return kernels


def run_notebook(name: str, kernel_dir: Path, workdir: Path) -> tuple[nbformat.NotebookNode, float]:
    """Execute ``notebooks/<name>`` from the notebooks folder with ``WORKDIR`` set; (notebook, seconds)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, f"{name} needs exactly one cell tagged 'parameters'"
    params[0].source += f"\nWORKDIR = {str(workdir)!r}  # injected by the test"
    km = KernelManager(kernel_name="bigearth-stac-tests",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]))
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT_S, allow_errors=False,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    started = time.perf_counter()
    try:
        client.execute()  # raises CellExecutionError with the cell and traceback on the first error
    finally:
        if km.has_kernel:  # nbclient leaves a kernel it was given running
            km.shutdown_kernel(now=False)
    return nb, time.perf_counter() - started


def text_of(nb: nbformat.NotebookNode) -> str:
    """All stream and text/plain outputs of the notebook, in order."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif "data" in out and "text/plain" in out.data:
                parts.append(out.data["text/plain"])
    return "\n".join(parts)


def pngs_of(nb: nbformat.NotebookNode) -> list[bytes]:
    return [base64.b64decode(out.data["image/png"])
            for cell in nb.cells for out in cell.get("outputs", [])
            if "data" in out and "image/png" in out.data]


def number(pattern: str, text: str) -> int:
    match = re.search(pattern, text)
    assert match, f"no {pattern!r} in the output:\n{text[-3000:]}"
    return int(match.group(1))


def port_closed(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").is_file() and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def assert_server_stopped(text: str) -> None:
    """The notebook printed its server's port and pid, and stopped it in its last cell."""
    match = re.search(r"S3 server on http://127\.0\.0\.1:(\d+) \(pid (\d+)\)", text)
    assert match, "the notebook does not say where its S3 server runs"
    port, pid = int(match.group(1)), int(match.group(2))
    assert "S3 server stopped: True" in text
    assert port_closed(port) and pid_gone(pid)


def assert_real_pngs(pngs: list[bytes], at_least: int) -> None:
    import matplotlib.image as mpimg

    assert len(pngs) >= at_least, f"{len(pngs)} figures, expected at least {at_least}"
    for data in pngs:
        assert data.startswith(PNG_SIGNATURE)
        image = mpimg.imread(io.BytesIO(data), format="png")
        assert image.shape[0] > 100 and image.shape[1] > 100
        assert image[..., :3].std() > 0.02, "a blank figure"


# -- notebooks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["01_quickstart.ipynb", "02_training.ipynb", "03_publishing.ipynb"])
def test_notebooks_are_saved_clean(name: str) -> None:
    """Committed without outputs, valid, with a parameters cell, and as the generator writes them."""
    sys.path.insert(0, str(NOTEBOOKS))
    try:
        import make_notebooks
    finally:
        sys.path.remove(str(NOTEBOOKS))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])
    generated = nbformat.writes(make_notebooks.NOTEBOOKS[name]())
    assert generated.rstrip("\n") == (NOTEBOOKS / name).read_text(encoding="utf-8").rstrip("\n"), \
        "stale notebook: run python notebooks/make_notebooks.py"


@pytest.mark.slow
@pytest.mark.xdist_group("first-hour")
def test_quickstart_notebook(kernel_dir: Path, tmp_path: Path) -> None:
    nb, seconds = run_notebook("01_quickstart.ipynb", kernel_dir, tmp_path)
    text = text_of(nb)
    assert number(r"search by label: (\d+) patches", text) >= 2  # the two real Finnish patches at least
    assert number(r"search by region: (\d+) patches", text) >= 2  # the two real Irish patches
    assert number(r"read (\d+) patches", text) == 6
    assert "Did you mean 'Coniferous forest'" in text
    assert_real_pngs(pngs_of(nb), at_least=4)  # one patch, the grid, footprints, label counts
    assert_server_stopped(text)
    print(f"01_quickstart.ipynb ran in {seconds:.0f} s")


@pytest.mark.slow
@pytest.mark.xdist_group("first-hour")
def test_training_notebook(kernel_dir: Path, tmp_path: Path) -> None:
    nb, seconds = run_notebook("02_training.ipynb", kernel_dir, tmp_path)
    text = text_of(nb)
    assert number(r"search: (\d+) training pairs", text) > 0
    assert number(r"training pairs, (\d+) validation pairs", text) > 0
    assert number(r"trained \d+ steps on (\d+) samples streamed from S3", text) > 0
    assert "'skipped': 0" in text  # no sample failed and was left out
    assert text.count("same as uninterrupted: True") == 2  # dataset state_dict, StatefulDataLoader
    assert "same as uninterrupted: False" not in text
    assert number(r"validation: (\d+) samples", text) > 0
    assert_real_pngs(pngs_of(nb), at_least=2)  # per-class F1 and AP
    assert_server_stopped(text)
    print(f"02_training.ipynb ran in {seconds:.0f} s")


@pytest.mark.slow
@pytest.mark.xdist_group("first-hour")
def test_publishing_notebook(kernel_dir: Path, tmp_path: Path) -> None:
    nb, seconds = run_notebook("03_publishing.ipynb", kernel_dir, tmp_path)
    text = text_of(nb)
    documents = number(r"validated (\d+) STAC documents", text)
    tiles = number(r"\((?:offline), (\d+) tile catalogs\)", text)
    assert tiles >= 2
    assert documents == 1 + 2 + tiles + 2 * 26  # root, collections, tile catalogs, an S2 and an S1 item per pair
    assert number(r"STAC documents \(offline, \d+ tile catalogs\): (\d+) problems", text) == 0
    objects = number(r"publish: (\d+) objects", text)
    assert number(r"publish: \d+ objects at s3://\S+: (\d+) uploaded", text) == objects > 26 * 4
    assert number(r"uploaded the second time: (\d+) objects", text) == 0
    assert number(r"search: (\d+) patches with 'Pastures'", text) >= 2  # the two real Irish patches
    assert_real_pngs(pngs_of(nb), at_least=1)
    assert_server_stopped(text)
    print(f"03_publishing.ipynb ran in {seconds:.0f} s")


# -- bigearth-stac show ------------------------------------------------------------------------


def check_patch_png(path: Path) -> None:
    """A real figure: RGB, VV, VH and the label text, not an empty canvas."""
    import matplotlib.image as mpimg

    assert path.read_bytes().startswith(PNG_SIGNATURE)
    image = mpimg.imread(path)
    height, width = image.shape[:2]
    assert 300 <= height <= 800 and 1000 <= width <= 2500, image.shape  # 3 panels + text at 110 dpi
    rgb = image[..., :3]
    assert rgb.std() > 0.1
    assert (rgb.max(axis=-1) < 0.9).mean() > 0.3  # a large share of the canvas is imagery, not white


@pytest.mark.parametrize("patch_id", [S2_ID, S1_ID])
def test_show_writes_a_png_of_a_real_patch(real_catalog: Path, tmp_path: Path, patch_id: str) -> None:
    from bigearth_stac.cli import main

    out = tmp_path / "patch.png"
    result = CliRunner().invoke(main, ["show", str(real_catalog), patch_id, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    check_patch_png(out)


def test_show_reads_from_s3(real_catalog: Path, s3_server: S3TestServer, s3_bucket: str, tmp_path: Path) -> None:
    from bigearth_stac.cli import main
    from catalog_builder.publish import publish

    publish(real_catalog, f"s3://{s3_bucket}/v1", s3_server.settings)
    out = tmp_path / "patch.png"
    result = CliRunner().invoke(main, ["show", f"s3://{s3_bucket}/v1", S2_ID, "--out", str(out),
                                       "--endpoint-url", s3_server.endpoint_url])
    assert result.exit_code == 0, result.output
    check_patch_png(out)


def test_show_unknown_id_is_a_clear_error(real_catalog: Path, tmp_path: Path) -> None:
    from bigearth_stac.cli import main

    out = tmp_path / "patch.png"
    result = CliRunner().invoke(main, ["show", str(real_catalog), "S2A_MSIL2A_20170613T101031_0_0", "--out", str(out)])
    assert result.exit_code == 1
    assert f"no patch 'S2A_MSIL2A_20170613T101031_0_0' in {real_catalog}" in result.output
    assert not out.exists()


# -- the demo ----------------------------------------------------------------------------------


def processes_with(marker: str) -> list[int]:
    """PIDs of live processes whose environment holds ``marker`` (inherited from the demo)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes() and not pid_gone(int(proc.name)):
                found.append(int(proc.name))
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


@pytest.mark.slow
@pytest.mark.xdist_group("first-hour")
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc to find leftover processes")
def test_demo_runs_end_to_end_and_stops_everything(tmp_path: Path) -> None:
    marker = f"BIGEARTH_DEMO_TEST={uuid.uuid4().hex}"
    env = {**os.environ, marker.split("=")[0]: marker.split("=")[1]}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bigearth_devtools.demo", "--pairs", "20", "--steps", "2",
                           "--workdir", str(tmp_path / "demo")],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    seconds = time.perf_counter() - started
    out = proc.stdout
    assert proc.returncode == 0, out[-5000:]
    assert number(r"built (\d+) pairs", out) == 26
    assert re.search(r"\(\d+ objects\) in [\d.]+ s \([\d.]+ pairs/s\)", out)
    assert number(r"search: (\d+) patches with 'Coniferous forest'", out) >= 2
    assert number(r"; (\d+) in an Irish bbox", out) >= 2
    assert number(r"trained 2 steps on (\d+) samples streamed from S3", out) > 0
    assert re.search(r"\(\d+ samples/s with 2 workers\)", out)
    assert "demo finished" in out
    match = re.search(r"S3 server \(moto\) on http://127\.0\.0\.1:(\d+), pid (\d+)", out)
    assert match, out[-3000:]
    port, pid = int(match.group(1)), int(match.group(2))
    deadline = time.monotonic() + 20
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.5)  # Dask workers may take a moment to exit after their nanny
    assert processes_with(marker) == [], "the demo left processes behind"
    assert pid_gone(pid) and port_closed(port)
    print(f"demo (26 pairs, 2 steps) ran in {seconds:.0f} s")
