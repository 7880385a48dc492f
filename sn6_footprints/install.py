"""The installer of the worker's Python environment: ``python -m sn6_footprints.install``.

Creates (or repairs) a venv, installs the plugin's shipped ``requirements.txt`` into it with
pip (the PyTorch build that matches the GPU driver, or the CPU build), verifies it by running
a small script *inside* it (imports, versions, CUDA, a tiny forward pass, GDAL and GEOS), and
records it in ``<profile>/sn6_footprints/worker.json`` for the plugin.

Standard library only, and it never imports torch itself: any Python >= 3.9 runs it,
including QGIS's own. Exit codes: 0 done, 2 a one-line problem the user can fix, 1 an
unexpected failure (one line plus the log's path). ``--events`` writes the worker protocol's
JSON lines (progress, info, warning, result, error) for the plugin's install dialog.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import platform
import re
import shutil
import signal
import ssl
# subprocess runs pip, venv, nvidia-smi and chosen interpreters: argument lists, never a shell
import subprocess  # nosec B404
import sys
import tempfile
import threading
import traceback
import urllib.error
import urllib.request
from pathlib import Path

from .worker import environment
from .worker import protocol

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE = 0, 1, 2
REQUIREMENTS = Path(__file__).resolve().with_name("requirements.txt")
PIP_PIN = "pip>=23.1,<26"  # the pip release range the requirement and index options were tried with
TORCH_INDEX_BASE = "https://download.pytorch.org/whl"
PYPI_INDEX = "https://pypi.org/simple"
PROBE_TIMEOUT_S = 4.0
NVIDIA_SMI_TIMEOUT_S = 20
VERIFY_TIMEOUT_S = 600
LOG_LIMIT_BYTES = 5 * 2**20
VARIANTS = ("cpu", "cu118", "cu121", "cu124", "cu126", "cu128")

# Newest first: (variant, CUDA release, minimum Linux driver, minimum Windows driver). The
# 12.x minimums are those of each CUDA toolkit's first release (NVIDIA's CUDA release notes,
# table 3); cu118 accepts CUDA 11's minor-version compatibility floor, so an older GPU
# driver still gets a GPU build before falling back to the CPU.
CUDA_DRIVER_MINIMUM = (
    ("cu128", "12.8", "570.26", "570.65"),
    ("cu126", "12.6", "560.28.03", "560.76"),
    ("cu124", "12.4", "550.54.14", "551.61"),
    ("cu121", "12.1", "530.30.02", "531.14"),
    ("cu118", "11.8", "450.80.02", "452.39"),
)

# Estimates (not measured per release): download and installed size in MB.
DOWNLOAD_ESTIMATE_MB = {"cpu": 200, "cuda": 2800, "others": 90}
INSTALLED_ESTIMATE_MB = {"cpu": 1000, "cuda": 6000, "others": 300}
DOWNLOAD_NOTE = ("estimates: CPU torch about 200 MB, a CUDA torch with its NVIDIA libraries "
                 "2.5-3 GB, rasterio/shapely/scipy/numpy about 90 MB; nothing for what is "
                 "already installed")


class InstallError(Exception):
    """A problem the user can fix: one line, exit code 2."""


# ---------------------------------------------------------------------------- pure choices


def parse_nvidia_smi(text: str | None) -> list[dict]:
    """GPUs from ``nvidia-smi --query-gpu=name,driver_version --format=csv,noheader``."""
    gpus = []
    for line in (text or "").splitlines():
        name, _, driver = line.strip().rpartition(",")
        driver = driver.strip()
        if name.strip() and re.fullmatch(r"\d+(\.\d+)+", driver):
            gpus.append({"name": name.strip(), "driver": driver})
    return gpus


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def choose_variant(driver: str | None, platform_name: str | None = None) -> tuple[str, str]:
    """The newest CUDA build of torch a GPU driver runs, or ``cpu``; and why."""
    platform_name = platform_name or sys.platform
    if platform_name == "darwin":
        return "cpu", "macOS: PyTorch has no CUDA builds (the CPU build uses Apple's MPS)"
    if not driver:
        return "cpu", "no NVIDIA GPU reported (nvidia-smi missing or found no GPU)"
    windows = platform_name.startswith("win")
    for variant, cuda, linux_minimum, windows_minimum in CUDA_DRIVER_MINIMUM:
        minimum = windows_minimum if windows else linux_minimum
        if _version_tuple(driver) >= _version_tuple(minimum):
            return variant, f"driver {driver} runs CUDA {cuda} (needs >= {minimum})"
    oldest = CUDA_DRIVER_MINIMUM[-1][3 if windows else 2]
    return "cpu", (f"driver {driver} is older than any CUDA build of torch needs (>= {oldest}): "
                   "update the NVIDIA driver to use the GPU")


def torch_choice(requested: str, smi_output: str | None,
                 platform_name: str | None = None) -> dict:
    """The torch variant for ``--cuda`` (``auto`` reads the nvidia-smi output)."""
    gpus = parse_nvidia_smi(smi_output)
    if requested != "auto":
        return {"requested": requested, "variant": requested,
                "reason": f"--cuda {requested} requested", "gpus": gpus}
    variant, reason = choose_variant(gpus[0]["driver"] if gpus else None, platform_name)
    if gpus:
        reason = f"{gpus[0]['name']}: {reason}"
    return {"requested": requested, "variant": variant, "reason": reason, "gpus": gpus}


def torch_index_url(variant: str, torch_index: str | None) -> str | None:
    """The PyTorch wheel index for a variant; None for ``--torch-index none``."""
    if torch_index and torch_index.lower() == "none":
        return None
    return torch_index or f"{TORCH_INDEX_BASE}/{variant}"


def torch_index_args(variant: str, index_url: str | None, platform_name: str | None = None,
                     reachable: bool = True) -> list[str]:
    """pip's index options for a variant. CUDA builds come only from PyTorch's index (the
    rest from PyPI); the CPU build on Linux/Windows from PyTorch's CPU index, which wins
    over PyPI's build by its ``+cpu`` label, but only when that index answers (pip would
    otherwise retry it for minutes); macOS's PyPI build is already the CPU one."""
    platform_name = platform_name or sys.platform
    if index_url is None or not reachable:
        return []
    if variant == "cpu":
        return [] if platform_name == "darwin" else ["--extra-index-url", index_url]
    return ["--index-url", index_url, "--extra-index-url", PYPI_INDEX]


def local_label(version: str | None) -> str | None:
    """The build label of a version (``2.13.0+cu126`` -> ``cu126``), or None."""
    return version.partition("+")[2] or None if version else None


def needs_torch_reinstall(installed: str | None, variant: str) -> bool:
    """True when an installed torch is a labelled build of another variant (pip would call
    ``torch==2.13.0+cpu`` satisfied when the user now asks for CUDA)."""
    label = local_label(installed)
    return bool(label) and label != variant


def requirement_lines(path: Path = REQUIREMENTS) -> list[str]:
    """The requirement specifiers of a requirements file, comments stripped."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            lines.append(line)
    return lines


def requirement_name(line: str) -> str:
    return re.split(r"[\s<>=!~;\[]", line, maxsplit=1)[0]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ---------------------------------------------------------------------------- the machine


def query_nvidia_smi() -> str | None:
    """nvidia-smi's GPU list, or None when there is no nvidia-smi or it fails."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        completed = subprocess.run(  # nosec B603
            [smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout if completed.returncode == 0 else None


def probe(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """True when the host of ``url`` answers within ``timeout_s`` (any HTTP status or a TLS
    problem counts: something answered). Name resolution runs in a thread so a hanging DNS
    cannot block the installer either."""
    answered = []

    def attempt():
        try:
            request = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(request, timeout=timeout_s):  # nosec B310
                answered.append(True)
        except urllib.error.HTTPError:
            answered.append(True)
        except urllib.error.URLError as exc:
            answered.append(isinstance(exc.reason, ssl.SSLError))
        except (OSError, ValueError):
            answered.append(False)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout_s + 1.0)
    return bool(answered and answered[0])


def _run_python(python: Path, code: str, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(  # nosec B603
        [str(python), "-c", code, *args], capture_output=True, text=True, encoding="utf-8",
        errors="replace", timeout=timeout_s, env=environment.clean_environ(),
        cwd=tempfile.gettempdir(), check=False)


def installed_versions(python: Path, names: list[str]) -> dict:
    """Installed distribution versions (None when missing) read from metadata, without
    importing anything heavy; empty when the interpreter cannot run."""
    code = ("import json, sys\nfrom importlib import metadata\nout = {}\n"
            "for name in sys.argv[1:]:\n"
            "    try:\n        out[name] = metadata.version(name)\n"
            "    except Exception:\n        out[name] = None\n"
            "print(json.dumps(out))\n")
    if not python.is_file():
        return {}
    try:
        completed = _run_python(python, code, *names)
        return json.loads(completed.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return {}


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _plugin_version() -> str | None:
    for metadata in (Path(__file__).with_name("metadata.txt"),
                     Path(__file__).resolve().parents[1] / "metadata.txt"):
        try:
            found = re.search(r"^version=(.+)$", metadata.read_text(encoding="utf-8"), re.M)
        except OSError:
            continue
        if found:
            return found.group(1).strip()
    return None


# ---------------------------------------------------------------------------- reporting


class Reporter:
    """Progress and messages: JSON event lines (``--events``) or readable lines; everything
    also goes to the install log."""

    def __init__(self, events: bool, log_path: Path | None = None):
        self.events = events
        self.log_path = log_path
        self._log = None
        self._last_percent = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            # Appended, so a later --check keeps the install's pip output; restarted past 5 MB.
            too_big = log_path.is_file() and log_path.stat().st_size > LOG_LIMIT_BYTES
            self._log = open(log_path, "w" if too_big else "a", encoding="utf-8")  # noqa: SIM115
            self.log(f"\n== sn6_footprints installer, {datetime.datetime.now().isoformat(timespec='seconds')}, "
                     f"Python {platform.python_version()} at {sys.executable}, args {sys.argv[1:]}")

    def log(self, line: str) -> None:
        if self._log:
            self._log.write(line.rstrip("\n") + "\n")
            self._log.flush()

    def progress(self, percent: float, message: str | None = None) -> None:
        percent = round(percent, 1)
        if self.events and percent != self._last_percent:
            protocol.emit("progress", percent=percent)
            self._last_percent = percent
        if message:
            self.info(message)

    def info(self, message: str, logged: bool = False) -> None:
        if not logged:
            self.log(message)
        if self.events:
            protocol.emit("info", message=message)
        else:
            print(message, flush=True)

    def warning(self, message: str) -> None:
        self.log("warning: " + message)
        if self.events:
            protocol.emit("warning", message=message)
        else:
            print("warning: " + message, flush=True)

    def result(self, data: dict, text: str) -> None:
        self.log(text)
        if self.events:
            protocol.emit("result", data=data)
        else:
            print(text, flush=True)

    def error(self, kind: str, message: str) -> None:
        self.log(f"error ({kind}): {message}")
        if self.events:
            protocol.emit("error", kind=kind, message=message)
        else:
            print("error: " + message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._log:
            self._log.close()
            self._log = None


# ---------------------------------------------------------------------------- the plan


def make_plan(args, probe_index: bool = True) -> dict:
    """What an install would do, changing nothing (``--plan`` prints it). ``--check`` skips
    the index probe (it downloads nothing)."""
    profile = Path(args.profile).expanduser().absolute()
    env = Path(args.env).expanduser().absolute() if args.env else environment.default_env_dir(profile)
    python = environment.env_python(env)
    env_exists = python.is_file()
    choice = torch_choice(args.cuda, query_nvidia_smi() if args.cuda == "auto" else None)
    variant = choice["variant"]
    index_url = torch_index_url(variant, args.torch_index)
    warnings = []
    reachable = None
    if probe_index and index_url is not None and not (variant == "cpu" and sys.platform == "darwin"):
        reachable = True if args.torch_index else probe(index_url)
        if not reachable:
            if variant == "cpu":
                warnings.append(
                    f"{index_url} does not answer: pip takes torch from its configured indexes "
                    "(on Linux PyPI's torch is the large CUDA build unless a CPU wheel is on "
                    "the local find-links)")
            else:
                warnings.append(f"{index_url} does not answer: the CUDA build cannot be "
                                "downloaded (check the connection or proxy, or use --cuda cpu)")
    base, base_error = None, None
    if not env_exists:
        try:
            base = environment.base_python()
        except RuntimeError as exc:
            base_error = str(exc)
    lines = requirement_lines()
    names = [requirement_name(line) for line in lines]
    installed = installed_versions(python, names) if env_exists else {}
    missing = [name for name in names if not installed.get(name)]
    torch_kind = "cpu" if variant == "cpu" else "cuda"
    reinstall_torch = needs_torch_reinstall(installed.get("torch"), variant)
    download = {"torch": DOWNLOAD_ESTIMATE_MB[torch_kind] if ("torch" in missing or reinstall_torch) else 0,
                "others": DOWNLOAD_ESTIMATE_MB["others"] if set(missing) - {"torch"} else 0}
    needed = ((INSTALLED_ESTIMATE_MB[torch_kind] if download["torch"] else 0)
              + (INSTALLED_ESTIMATE_MB["others"] if download["others"] else 0))
    disk = _existing_ancestor(env)
    return {
        "action": "plan",
        "profile": str(profile),
        "env": str(env),
        "env_exists": env_exists,
        "python": str(python),
        "create_venv": not env_exists,
        "base_python": str(base) if base else None,
        "base_python_error": base_error,
        "system_site_packages": bool(args.system_site_packages),
        "torch": {**choice, "index_url": index_url, "index_reachable": reachable,
                  "index_args": torch_index_args(variant, index_url, reachable=reachable is not False),
                  "installed": installed.get("torch"), "reinstall": reinstall_torch},
        "requirements": str(REQUIREMENTS),
        "requirements_sha256": file_sha256(REQUIREMENTS),
        "packages": lines,
        "installed": installed,
        "missing": missing,
        "pip_args": list(args.pip_arg or []),
        "download_estimate_mb": {**download, "total": download["torch"] + download["others"],
                                 "note": DOWNLOAD_NOTE},
        "disk": {"path": str(disk), "free_mb": shutil.disk_usage(disk).free // 2**20,
                 "needed_estimate_mb": needed},
        "record": str(environment.record_path(profile)),
        "log": str(environment.install_log_path(profile)),
        "warnings": warnings,
    }


def plan_text(plan: dict) -> str:
    torch = plan["torch"]
    estimate = plan["download_estimate_mb"]
    lines = [
        f"environment:  {plan['env']} ({'exists' if plan['env_exists'] else 'will be created'})",
        f"base python:  {plan['base_python'] or plan['base_python_error'] or 'not needed (environment exists)'}",
        f"torch build:  {torch['variant']} - {torch['reason']}",
        f"pip indexes:  {' '.join(torch['index_args']) or 'pip configuration only'}",
        f"packages:     {', '.join(plan['packages'])}",
        f"missing now:  {', '.join(plan['missing']) or 'none'}"
        + ("; torch is another build and will be reinstalled" if torch["reinstall"] else ""),
        f"download:     about {estimate['total']} MB ({estimate['note']})",
        f"disk:         {plan['disk']['path']}: {plan['disk']['free_mb']} MB free, "
        f"about {plan['disk']['needed_estimate_mb']} MB needed",
        f"record:       {plan['record']}",
    ]
    lines += [f"warning:      {warning}" for warning in plan["warnings"]]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- doing it


class Installer:
    """One run: create, install, verify, record; messages through a Reporter."""

    def __init__(self, args, reporter: Reporter):
        self.args = args
        self.reporter = reporter
        self.child = None

    @property
    def log_path(self) -> Path:
        return self.reporter.log_path

    def run_logged(self, command: list[str], start: float, end: float,
                   expected_steps: int = 1) -> tuple[int, list[str]]:
        """Run a command, its output into the log and the key pip lines to the reporter;
        progress moves from ``start`` to ``end`` as pip collects packages."""
        self.reporter.log("$ " + " ".join(command))
        errors = []
        steps = 0
        self.child = subprocess.Popen(  # nosec B603
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            encoding="utf-8", errors="replace", env=environment.clean_environ(),
            cwd=tempfile.gettempdir())
        try:
            for line in self.child.stdout:
                line = line.rstrip()
                self.reporter.log(line)
                if line.startswith("ERROR:") or "Error:" in line[:40]:
                    errors.append(line)
                if line.startswith(("Collecting", "Processing", "Requirement already satisfied")):
                    steps += 1
                    self.reporter.progress(start + (end - start) * 0.8 * min(1.0, steps / expected_steps))
                elif line.startswith("Installing collected packages"):
                    self.reporter.progress(start + (end - start) * 0.85)
                if line.lstrip().startswith(("Collecting", "Downloading", "Installing collected",
                                             "Successfully", "Building wheel", "Attempting uninstall")):
                    self.reporter.info(line.strip(), logged=True)
            returncode = self.child.wait()
        finally:
            if self.child.poll() is None:
                self.child.terminate()
                self.child.wait(30)
            self.child = None
        self.reporter.progress(end)
        return returncode, errors

    def pip_failure(self, what: str, errors: list[str], variant: str) -> InstallError:
        """A one-line message for a failed pip run, naming the likely fix."""
        text = " ".join(errors)
        log = self.log_path
        if "No matching distribution found for torch" in text or (
                "Could not find a version" in text and "torch" in text):
            return InstallError(
                f"pip found no torch build {variant} for Python {platform.python_version()} "
                f"on {platform.system()} {platform.machine()}: try another --cuda variant "
                f"(or --cuda cpu), or an environment with a Python torch supports; log: {log}")
        if re.search(r"No space left|Errno 28", text):
            return InstallError(f"the disk is full while {what}: free some space or choose "
                                f"another --env, then rerun; log: {log}")
        if re.search(r"connection|resolve|proxy|timed out|Max retries|Could not find a version",
                     text, re.I):
            return InstallError(
                f"pip could not download the packages ({one_line(errors[-1], 160) if errors else what}): "
                "check the internet connection or proxy (HTTPS_PROXY), or install offline with "
                f"--pip-arg=--no-index --pip-arg=--find-links=DIR; log: {log}")
        detail = one_line(errors[-1], 200) if errors else "see the log"
        return InstallError(f"pip failed while {what} ({detail}): rerun the installer; "
                            f"full log: {log}")

    def create_venv(self, env: Path, plan: dict) -> None:
        if plan["base_python_error"]:
            raise InstallError(plan["base_python_error"])
        command = [plan["base_python"], "-m", "venv"]
        if self.args.system_site_packages:
            command.append("--system-site-packages")
        returncode, errors = self.run_logged(command + [str(env)], 5, 10)
        if returncode != 0:
            log = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path else ""
            if "ensurepip" in log:
                raise InstallError(
                    f"{plan['base_python']} cannot make environments with pip (no ensurepip): "
                    "install the python3-venv package (Debian/Ubuntu: sudo apt install "
                    f"python3-venv) and rerun; log: {self.log_path}")
            raise InstallError(f"could not create the environment {env} "
                               f"({one_line(errors[-1]) if errors else 'see the log'}): choose "
                               f"another --env or delete it and rerun; log: {self.log_path}")

    def ensure_pip(self, python: Path, variant: str) -> None:
        if _run_python(python, "import pip").returncode != 0:
            self.reporter.info("the environment has no pip: adding it with ensurepip")
            returncode, errors = self.run_logged([str(python), "-m", "ensurepip", "--upgrade"], 10, 12)
            if returncode != 0:
                raise self.pip_failure("adding pip", errors, variant)
        returncode, errors = self.run_logged(
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
             "--progress-bar=off", "--upgrade", PIP_PIN], 12, 15)
        if returncode != 0:
            raise self.pip_failure("upgrading pip", errors, variant)

    def pip_install(self, python: Path, plan: dict, extra: list[str], start: float, end: float,
                    what: str) -> None:
        torch = plan["torch"]
        command = [str(python), "-m", "pip", "install", "--disable-pip-version-check",
                   "--no-input", "--progress-bar=off", *extra, *torch["index_args"],
                   *plan["pip_args"]]
        expected = 40 if torch["variant"] != "cpu" else 25
        returncode, errors = self.run_logged(command, start, end, expected)
        if returncode != 0:
            raise self.pip_failure(what, errors, torch["variant"])

    def verify(self, python: Path, env: Path, start: float, end: float) -> dict:
        """Run the verification script inside the environment; its report."""
        self.reporter.progress(start, f"verifying {env} (imports, a tiny forward pass, GDAL, GEOS)")
        root = environment.package_root()
        try:
            completed = subprocess.run(  # nosec B603
                [str(python), "-c", VERIFY_SCRIPT, str(root)], capture_output=True, text=True,
                encoding="utf-8", errors="replace", timeout=VERIFY_TIMEOUT_S,
                env=environment.worker_environ(), cwd=tempfile.gettempdir(), check=False)
        except OSError as exc:
            raise InstallError(f"cannot run {python} ({one_line(exc)}): delete {env} and rerun "
                               "the installer") from exc
        except subprocess.TimeoutExpired as exc:
            raise InstallError(f"verifying {env} took over {VERIFY_TIMEOUT_S} s: rerun the "
                               "installer; if it stays, delete the environment and rerun") from exc
        self.reporter.log(completed.stdout)
        self.reporter.log(completed.stderr)
        report = None
        for line in completed.stdout.splitlines():
            if line.startswith(VERIFY_MARK):
                report = json.loads(line[len(VERIFY_MARK):])
        if report is None:
            last = (completed.stderr.strip().splitlines() or ["no output"])[-1]
            raise InstallError(f"the Python of {env} crashed while verifying (exit "
                               f"{completed.returncode}: {one_line(last, 160)}): delete {env} "
                               f"and rerun the installer; log: {self.log_path}")
        self.reporter.progress(end)
        return report

    def problem(self, report: dict, env: Path, fix: str) -> InstallError | None:
        """The one-line error for a failed verification, or None when it passed."""
        if report["missing"]:
            names = ", ".join(report["missing"])
            return InstallError(f"missing from {env}: {names}: {fix}")
        for name, message in report["broken"].items():
            if name == CORE_STEP:
                return InstallError(
                    f"the plugin's core does not import in {env} ({one_line(message, 200)}): it "
                    "needs a package its requirements file does not install; report this as a "
                    "bug of the plugin (an environment made with --system-site-packages may "
                    "have it)")
            return InstallError(f"{name} does not work in {env} ({one_line(message, 200)}): {fix}")
        return None

    def record(self, profile: Path, env: Path, python: Path, report: dict, variant: str) -> dict:
        versions = report["versions"]
        record = {
            "env": str(env),
            "python": str(python),
            "verified": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "versions": {key: versions.get(key) for key in
                         ("python", "torch", "rasterio", "gdal", "shapely", "numpy", "scipy", "skimage",
                          "geos", "pyogrio", "pyogrio_gdal")},
            "cuda": bool(report.get("cuda")),
            "cuda_device": report.get("cuda_device"),
            "torch_cuda": report.get("torch_cuda"),
            "torch_variant": local_label(versions.get("torch")) or variant,
            "requirements_sha256": file_sha256(REQUIREMENTS),
            "plugin_version": _plugin_version(),
        }
        if report.get("cuda_error"):
            record["cuda_error"] = report["cuda_error"]
        environment.write_record(profile, record)
        return record

    def run(self) -> dict:
        args = self.args
        profile = Path(args.profile).expanduser().absolute()
        self.reporter.progress(0, "planning the worker environment")
        plan = make_plan(args, probe_index=not args.check)
        env, python = Path(plan["env"]), Path(plan["python"])
        variant = plan["torch"]["variant"]
        for warning in plan["warnings"]:
            self.reporter.warning(warning)
        if args.check:
            if not python.is_file():
                raise InstallError(f"no Python environment at {env}: run the installer without "
                                   "--check to create it")
            report = self.verify(python, env, 10, 95)
            error = self.problem(report, env, "run the installer without --check to repair it "
                                 f"(python -m sn6_footprints.install --env {env})")
            if error:
                raise error
        else:
            self.reporter.info(f"torch build {variant}: {plan['torch']['reason']}")
            if variant != "cpu" and plan["torch"]["index_reachable"] is False:
                raise InstallError(plan["warnings"][-1])
            if plan["disk"]["free_mb"] < plan["disk"]["needed_estimate_mb"]:
                raise InstallError(
                    f"not enough free space at {plan['disk']['path']}: about "
                    f"{plan['disk']['needed_estimate_mb']} MB needed, {plan['disk']['free_mb']} MB "
                    "free: free some space or choose another --env")
            if plan["create_venv"]:
                if env.exists() and env.is_dir() and any(env.iterdir()):
                    raise InstallError(f"{env} exists but holds no Python environment: delete "
                                       "it or choose another --env, then rerun")
                self.reporter.progress(5, f"creating the environment {env} with {plan['base_python']}")
                self.create_venv(env, plan)
                if not python.is_file():
                    raise InstallError(f"the new environment {env} has no {python.name}: delete "
                                       "it and rerun the installer")
            self.reporter.progress(10, "making sure pip is current (" + PIP_PIN + ")")
            self.ensure_pip(python, variant)
            total_mb = plan["download_estimate_mb"]["total"]
            self.reporter.progress(15, f"installing {', '.join(plan['packages'])} ("
                                   + (f"download about {total_mb} MB, estimated)" if total_mb
                                      else "all installed already: checking versions)"))
            if plan["torch"]["reinstall"]:
                self.reporter.info(f"replacing torch {plan['torch']['installed']} with the {variant} build")
                torch_line = next(line for line in plan["packages"] if requirement_name(line) == "torch")
                self.pip_install(python, plan, ["--force-reinstall", "--no-deps", torch_line],
                                 15, 30, "replacing torch")
            self.pip_install(python, plan, ["-r", str(REQUIREMENTS)], 30, 80, "installing the packages")
            report = self.verify(python, env, 80, 90)
            broken = [name for name in {**report["missing"], **report["broken"]}
                      if name in {requirement_name(line) for line in plan["packages"]}]
            if broken:
                self.reporter.warning(f"{', '.join(broken)} installed but not working: reinstalling")
                lines = [line for line in plan["packages"] if requirement_name(line) in broken]
                self.pip_install(python, plan, ["--force-reinstall", "--no-deps", *lines], 90, 94,
                                 "reinstalling " + ", ".join(broken))
                report = self.verify(python, env, 94, 97)
            error = self.problem(report, env, f"delete {env} and rerun the installer; "
                                 f"log: {self.log_path}")
            if error:
                raise error
            label = local_label(report["versions"].get("torch"))
            if label and label != variant:
                self.reporter.warning(
                    f"asked for the {variant} build but pip installed torch "
                    f"{report['versions']['torch']} (from pip's configured indexes or "
                    "find-links); see the log")
        if report.get("cuda_error"):
            self.reporter.warning(f"CUDA is available but a forward pass on it failed "
                                  f"({one_line(report['cuda_error'], 160)}): the worker will use the CPU")
        record = self.record(profile, env, python, report, variant)
        self.reporter.progress(100)
        return record


VERIFY_MARK = "@sn6-verify "
CORE_STEP = "sn6_footprints.core"

# Run by the environment's own Python, the plugin's package root as argv[1]. Prints one
# VERIFY_MARK line: versions, missing/broken packages (the first failing step stops it).
VERIFY_SCRIPT = r'''
import importlib, json, os, platform, sys
out = {"versions": {"python": platform.python_version()}, "missing": {}, "broken": {}}
WORKER_MODULES = ("extract", "vector_io", "scoring", "simulation", "training", "postprocessing.instances")
def done():
    print("@sn6-verify " + json.dumps(out, default=str), flush=True)
    sys.exit(0)
modules = {}
for name in ("numpy", "scipy", "skimage", "torch", "rasterio", "shapely", "pyogrio"):
    try:
        modules[name] = importlib.import_module(name)
        out["versions"][name] = getattr(modules[name], "__version__", None)
    except ModuleNotFoundError as exc:
        (out["missing"] if exc.name == name else out["broken"])[name] = "%s: %s" % (type(exc).__name__, exc)
    except Exception as exc:
        out["broken"][name] = "%s: %s" % (type(exc).__name__, exc)
if out["missing"] or out["broken"]:
    done()
step = "rasterio"
try:
    import numpy, rasterio
    from rasterio.io import MemoryFile
    from rasterio.transform import from_origin
    out["versions"]["gdal"] = rasterio.__gdal_version__
    data = numpy.arange(64, dtype="uint8").reshape(1, 8, 8)
    with MemoryFile() as memory:
        with memory.open(driver="GTiff", width=8, height=8, count=1, dtype="uint8",
                         crs="EPSG:32631", transform=from_origin(600000, 5800000, 0.5, 0.5)) as ds:
            ds.write(data)
        with memory.open() as ds:
            assert (ds.read() == data).all() and ds.crs.to_epsg() == 32631, "GeoTIFF round trip"
    step = "shapely"
    import shapely, shapely.wkt
    out["versions"]["geos"] = shapely.geos_version_string
    polygon = shapely.wkt.loads("POLYGON ((0 0, 2 0, 2 1, 0 1, 0 0))")
    assert shapely.wkt.loads(polygon.wkt).equals(polygon) and polygon.area == 2, "WKT round trip"
    step = "sn6_footprints.core"
    import sn6_footprints
    root = os.path.realpath(sys.argv[1])
    here = os.path.realpath(os.path.dirname(os.path.dirname(sn6_footprints.__file__)))
    assert here == root, "imports the plugin from %s, not %s" % (here, root)
    from sn6_footprints.core.model import UNet11
    for module in WORKER_MODULES:
        try:
            importlib.import_module("sn6_footprints.core." + module)
        except Exception as exc:
            raise ImportError("sn6_footprints.core.%s: %s: %s" % (module, type(exc).__name__, exc))
    out["versions"]["pyogrio_gdal"] = modules["pyogrio"].__gdal_version_string__  # the core's vector I/O
    step = "torch"
    import torch
    model = UNet11(in_channels=4, width=0.125).eval()
    with torch.no_grad():
        shape = tuple(model(torch.zeros(1, 4, 64, 64)).shape)
    assert shape == (1, 1, 64, 64), "forward pass gave %s" % (shape,)
    out["torch_cuda"] = torch.version.cuda
    out["cuda"] = bool(torch.cuda.is_available())
    out["cuda_device"] = torch.cuda.get_device_name(0) if out["cuda"] else None
except Exception as exc:
    out["broken"][step] = "%s: %s" % (type(exc).__name__, exc)
    done()
if out["cuda"]:
    try:
        with torch.no_grad():
            model.cuda()(torch.zeros(1, 4, 64, 64, device="cuda"))
        torch.cuda.synchronize()
    except Exception as exc:
        out["cuda"] = False
        out["cuda_error"] = "%s: %s" % (type(exc).__name__, exc)
done()
'''


# ---------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sn6_footprints.install",
        description="Create, repair and verify the Python environment the sn6_footprints "
                    "worker runs in (PyTorch, rasterio, shapely), and record it for the plugin.")
    parser.add_argument("--profile", default=str(environment.default_profile_dir()),
                        help="QGIS profile folder the record and log go to (default: %(default)s)")
    parser.add_argument("--env", default="",
                        help="environment folder (or its python) to create or repair; default "
                             "<profile>/sn6_footprints/env")
    parser.add_argument("--cuda", default="auto", choices=("auto",) + VARIANTS,
                        help="torch build: auto picks the newest CUDA build the NVIDIA driver "
                             "runs, cpu without a GPU (default: auto)")
    parser.add_argument("--torch-index", default=None, metavar="URL|none",
                        help="PyTorch wheel index instead of download.pytorch.org/whl/<variant>; "
                             "none: only pip's configured indexes")
    parser.add_argument("--system-site-packages", action="store_true",
                        help="a new environment also sees the base Python's packages")
    parser.add_argument("--pip-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for pip install (repeatable), e.g. "
                             "--pip-arg=--no-binary=rasterio,shapely,pyogrio")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--plan", action="store_true", help="print what would be done; change nothing")
    mode.add_argument("--check", action="store_true",
                      help="verify the environment only (and record it when it passes)")
    parser.add_argument("--json", action="store_true", help="with --plan: print the plan as JSON")
    parser.add_argument("--events", action="store_true",
                        help="print progress and messages as the worker protocol's JSON lines")
    return parser


def _terminate_on_signal(installer: Installer):
    def handler(signum, frame):
        if installer.child is not None and installer.child.poll() is None:
            installer.child.terminate()
        raise KeyboardInterrupt
    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.torch_index and args.torch_index.lower() != "none" and not re.match(
            r"^(https?|file)://", args.torch_index):
        parser.error(f"--torch-index must be a URL or none, not {args.torch_index!r}")
    if args.plan:
        try:
            plan = make_plan(args)
        except (OSError, RuntimeError) as exc:
            Reporter(args.events).error("usage", one_line(exc))
            return EXIT_USAGE
        if args.events:
            protocol.emit("result", data=plan)
        else:
            print(json.dumps(plan, indent=2) if args.json else plan_text(plan), flush=True)
        return EXIT_OK
    profile = Path(args.profile).expanduser().absolute()
    log_path = environment.install_log_path(profile)
    try:
        reporter = Reporter(args.events, log_path)
    except OSError as exc:
        Reporter(args.events).error("usage", f"cannot write the install log {log_path} "
                                             f"({one_line(exc, 120)}): choose another --profile")
        return EXIT_USAGE
    installer = Installer(args, reporter)
    _terminate_on_signal(installer)
    try:
        record = installer.run()
        versions = record["versions"]
        device = record["cuda_device"] if record["cuda"] else "CPU only"
        reporter.result({"action": "check" if args.check else "install", **record},
                        f"OK: {record['env']} - torch {versions['torch']} ({device}), rasterio "
                        f"{versions['rasterio']} (GDAL {versions['gdal']}), shapely "
                        f"{versions['shapely']}, numpy {versions['numpy']}; recorded in "
                        f"{environment.record_path(profile)}")
        return EXIT_OK
    except InstallError as exc:
        reporter.error("usage", one_line(exc, 600))
        return EXIT_USAGE
    except KeyboardInterrupt:
        reporter.error("cancelled", "installation cancelled; rerun the installer to finish it")
        return EXIT_INTERNAL
    except Exception as exc:  # the promise: one line and the log, never a bare traceback
        reporter.log(traceback.format_exc())
        reporter.error("internal", f"unexpected failure ({type(exc).__name__}: "
                                   f"{one_line(exc, 200)}); full log: {log_path}")
        return EXIT_INTERNAL
    finally:
        reporter.close()


if __name__ == "__main__":
    sys.exit(main())
