"""scripts/test.sh and scripts/setup.sh, the README's two commands: they check and choose for the
user (system tools first; PyTorch's CPU build without a GPU), run with stand-in tools on PATH."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def tools_dir(tmp_path: Path, *names: str, where: str = "bin") -> Path:
    """A PATH holding only these tools (links to the real ones)."""
    bin_dir = tmp_path / where
    bin_dir.mkdir()
    for name in names:
        found = shutil.which(name)
        assert found, name
        (bin_dir / name).symlink_to(found)
    return bin_dir


def test_the_test_command_names_missing_system_tools_and_how_to_install_them(tmp_path: Path) -> None:
    path = tools_dir(tmp_path, "bash", "dirname")
    done = subprocess.run(["bash", str(ROOT / "scripts" / "test.sh")], capture_output=True, text=True,
                          env={"PATH": str(path), "HOME": str(tmp_path)}, timeout=60)
    assert done.returncode == 1
    assert done.stderr == ("the tests need bubblewrap chromium: install with: "
                           "sudo apt-get install -y bubblewrap chromium\n")


FAKE_PYTHON = """#!/bin/bash
echo "$*" >> "$CALLS"
case "$*" in
  "-c import torch") exit 1 ;;
  *--index-url*) exit "$CPU_INDEX_RC" ;;
  *) exit 0 ;;
esac
"""


def setup_calls(tmp_path: Path, cpu_index_rc: int, gpu: bool) -> list[str]:
    venv = tmp_path / f"venv-{cpu_index_rc}-{gpu}"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    path = tools_dir(tmp_path, "bash", "dirname", where=f"bin-{cpu_index_rc}-{gpu}")
    if gpu:
        (path / "nvidia-smi").write_text("#!/bin/bash\necho 'GPU 0: H100'\n")
        (path / "nvidia-smi").chmod(0o755)
    calls = tmp_path / f"calls-{cpu_index_rc}-{gpu}"
    env = {"PATH": str(path), "HOME": str(tmp_path), "VENV": str(venv), "CALLS": str(calls),
           "CPU_INDEX_RC": str(cpu_index_rc)}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], capture_output=True, text=True,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return calls.read_text().splitlines()


def test_setup_takes_the_cpu_build_without_a_gpu_and_the_pinned_torch_when_its_index_is_unreachable(tmp_path: Path) -> None:
    cpu = "-m pip install -q --timeout 10 --retries 0 --index-url https://download.pytorch.org/whl/cpu torch==2.13.0"
    plain = "-m pip install -q torch==2.13.0"
    reachable = setup_calls(tmp_path, cpu_index_rc=0, gpu=False)
    assert reachable[1] == cpu and plain not in reachable
    unreachable = setup_calls(tmp_path, cpu_index_rc=1, gpu=False)
    assert unreachable[1:3] == [cpu, plain]  # as today where only PyPI or a mirror answers
    with_gpu = setup_calls(tmp_path, cpu_index_rc=0, gpu=True)
    assert with_gpu[1] == plain and cpu not in with_gpu
    assert reachable[-1] == "-m pip install -q -e .[hf,dev]"
