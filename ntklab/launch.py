"""What one `ntklab` command does around its runs: one-line messages, the default folders it
creates (unique even when two commands start in the same second), signals during start-up,
output folders that cannot be written, and a sweep's record of how each job of this launch
ended, which the sweep report and the sweep's exit status read."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser

from ntklab.rundir import Status
from ntklab.sweep import LAUNCH_LOG, override_key

_CREATED: dict[str, Path] = {}  # requested default folder → the folder made for it
_MADE: dict[Path, list[Path]] = {}  # that folder → it and the parents made for it, deepest first
_SWEEP: dict[str, object] = {}  # the running sweep: "dir", and "stop" once a signal ended it


log = logging.getLogger("ntklab")
CONSOLE_FORMAT = "ntklab: %(message)s"


class ConsoleHandler(logging.StreamHandler):
    """ntklab's messages on stderr (conf/hydra/job_logging), written above any progress bar on
    the screen rather than into it."""

    def __init__(self, stream=None) -> None:
        super().__init__(stream if stream is not None else sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:
            self.handleError(record)


def console(message: str, level: int = logging.INFO) -> None:
    """One line for the user, on stderr as `ntklab: message`, through the `ntklab` logger (so
    a running run's ntklab.log holds it too). Before Hydra has set up logging (a command refused
    at start-up), a handler of the same format is put in place."""
    root = logging.getLogger()
    if not root.handlers:
        handler = ConsoleHandler()
        handler.setFormatter(logging.Formatter(CONSOLE_FORMAT))
        root.addHandler(handler)
    if log.getEffectiveLevel() > level:
        log.setLevel(level)
    log.log(level, message)


def _warning_to_log(message, category, filename, lineno, file=None, line=None) -> None:
    log.warning("warning: %s", message)


def warnings_to_log() -> None:
    """Python warnings become one `ntklab: warning: …` line through logging (so they reach the
    run's ntklab.log too), without the source line Python would print under them."""
    import warnings

    warnings.showwarning = _warning_to_log


def unique_folder(path: str) -> str:
    """The OmegaConf resolver behind the default run and sweep folders: `path`, or `path-2`,
    `path-3`, … the first one that did not exist, created here (atomically, so two commands
    started in the same second get two folders). The same answer for the same `path` in one
    process; Hydra copies the resolved value to a sweep's jobs."""
    if path in _CREATED:
        return str(_CREATED[path])
    base, k = Path(path), 1
    made = [p for p in (base, *base.parents) if not p.exists()]
    while True:
        folder = base if k == 1 else base.with_name(f"{base.name}-{k}")
        try:
            folder.mkdir(parents=True)
            break
        except FileExistsError:
            if not folder.is_dir():
                raise
            k += 1
    _CREATED[path] = folder
    _MADE[folder] = [folder, *[p for p in made if p != base]]
    return str(folder)


MULTIRUN = "multirun.yaml"  # Hydra's record of a sweep, in its folder
LABEL_MAX = 120  # characters of overrides in a default run folder's name


def folder_label(overrides: str) -> str:
    """The OmegaConf resolver behind the default run folder's suffix: `_` and the run's
    overrides as a sweep names its job folders (`_model=linear,optim.lr=2`), so that the folder,
    and TensorBoard's name for the run, say what it is; '' for the default config. A '/' in a
    value (a CSV's path) becomes '_', and a long list is cut with its length kept legible."""
    if not overrides:
        return ""
    label = overrides.replace("/", "_")
    if len(label) > LABEL_MAX:
        label = label[: LABEL_MAX - 1] + "…"
    return f"_{label}"


def _overrides_of(text: str) -> list[tuple[str, object]]:
    """(key, parsed override) for each line of a Hydra overrides list."""
    parsed = OverridesParser.create().parse_overrides([line for line in text if line])
    return [(o.get_key_element().lstrip("+~"), o) for o in parsed]


def swept_keys(overrides: list[str]) -> list[str]:
    """The keys a sweep's overrides (its command line and sweeper params, `key=a,b,c`) give
    more than one value, in order."""
    found: dict[str, None] = {}
    for key, override in _overrides_of(overrides):
        if override.is_sweep_override() and len(list(override.sweep_string_iterator())) > 1:
            found[key] = None
    return list(found)


def command_keys(run_dir: Path) -> tuple[list[str], list[str]]:
    """What the command that started the run in `run_dir` set, from the record Hydra's config
    left there (.hydra/): (the `key=value` overrides that name the run, the keys that vary): a
    sweep job's varying keys are its sweep's swept keys (from the sweep's multirun.yaml), a
    single run's are the keys on its command line. ([], []) for a run started from Python."""
    from omegaconf import OmegaConf

    record = Path(run_dir) / ".hydra"
    try:
        task = list(OmegaConf.load(record / "overrides.yaml"))
        hydra = OmegaConf.load(record / "hydra.yaml").hydra
    except (OSError, ValueError, AttributeError):
        return [], []
    excluded = set(hydra.job.config.override_dirname.exclude_keys)
    named = [str(o) for o in task if str(o).split("=", 1)[0].lstrip("+~") not in excluded]
    if not str(hydra.get("mode")).endswith("MULTIRUN"):
        return sorted(named), [key for key, _ in _overrides_of(named)]
    # The sweep's folder, where Hydra wrote multirun.yaml: the nearest one above the job. (Not
    # the record's hydra.sweep.dir: resolving its ${now} again would make a new folder.)
    found = [p for p in Path(run_dir).resolve().parents if (p / MULTIRUN).exists()]
    try:
        sweep = OmegaConf.load(found[0] / MULTIRUN).hydra
    except (IndexError, OSError, ValueError, AttributeError):
        return sorted(named), []
    params = [f"{k}={v}" for k, v in (sweep.sweeper.get("params") or {}).items()]
    swept = [k for k in swept_keys(params + list(sweep.overrides.task)) if k not in excluded]
    return sorted(o for o in named if o.split("=", 1)[0] in swept), swept


# Flags a resumed command must not repeat, and the folder flags it sets itself.
_RESUME_DROPS = ("resume", "overwrite", "hydra.run.dir", "hydra.sweep.dir")


def hydra_value(text: str) -> str:
    """`text` as a value Hydra's override grammar reads back unchanged (quoted where needed)."""
    try:
        (parsed,) = OverridesParser.create().parse_overrides([f"k={text}"])
        if parsed.value() == text:
            return text
    except Exception:  # the grammar refuses it unquoted (e.g. non-ASCII letters)
        pass
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def resume_command(folder: str, multirun: bool) -> str:
    """The command that continues this run: the words typed, plus resume=true and the folder."""
    kept = [a for a in sys.argv[1:] if override_key(a) not in _RESUME_DROPS]
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    words = ["ntklab", *kept, "resume=true", f"{key}={hydra_value(folder)}"]
    return " ".join(shlex.quote(w) for w in words)


def release(run_dir: Path) -> None:
    """Remove a default folder this command created (and the empty parents it created for it),
    when a refused run left it empty."""
    run_dir = Path(run_dir).resolve()
    for folder, made in _MADE.items():
        if folder.resolve() == run_dir:
            for path in made:  # deepest first
                if path.is_dir() and not any(path.iterdir()):
                    path.rmdir()


def check_output_folder(argv: list[str]) -> str | None:
    """Why the run or sweep folder named on the command line (or the default `runs/`) cannot
    be written: a file, a read-only place, a full disk; None when it can."""
    key = "hydra.sweep.dir" if "-m" in argv or "--multirun" in argv else "hydra.run.dir"
    given = [a.split("=", 1)[1] for a in argv if a.split("=", 1)[0].lstrip("+") == key]
    path = Path(given[-1].strip("'\"") if given else "runs").expanduser()
    name = f"{key}={path}" if given else f"the default folder {path}/"
    if path.exists() and not path.is_dir():
        return f"{name}: is a file, not a folder; choose a folder"
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{name}: {existing} cannot be written (read-only); choose a writable folder"
    stats = os.statvfs(existing)
    if stats.f_bavail * stats.f_frsize < 2**20:
        return f"{name}: the disk holding {existing} is full; free space or choose another disk"
    return None


class Interrupted(BaseException):
    """SIGTERM outside training (which stops at an epoch boundary on its own)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @staticmethod
    def _raise(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    @classmethod
    @contextlib.contextmanager
    def catch(cls) -> Iterator[None]:
        """Answer signals outside training (which stops at an epoch boundary on its own) in one
        line and 128 + the signal, writing the report of a sweep they stopped."""
        previous = signal.signal(signal.SIGTERM, cls._raise)
        try:
            yield
        except (KeyboardInterrupt, Interrupted) as err:
            signum = err.signum if isinstance(err, Interrupted) else signal.SIGINT
            stopped(signal.Signals(signum))
            sys.exit(128 + signum)
        finally:
            signal.signal(signal.SIGTERM, previous)


def stopped(sig: signal.Signals) -> None:
    """The one line (and a sweep's report) for a command a signal ended outside training."""
    if "dir" not in _SWEEP:
        console(f"interrupted by {sig.name} while starting; no run was left half-written")
        return
    from ntklab.report import write_sweep_report  # matplotlib only when a report is drawn

    sweep_dir = Path(str(_SWEEP["dir"]))
    sweep_interrupted(sweep_dir, write_sweep_report(sweep_dir, quiet=True), sig.name)


def sweep_interrupted(sweep_dir: Path, report: Path | None, signal_name: str) -> None:
    """The line that ends an interrupted sweep: what completed, the report, how to continue."""
    from ntklab.sweep import SweepError, find_jobs

    try:
        jobs = find_jobs(sweep_dir)
    except SweepError:
        jobs = []
    done = sum(job.completed for job in jobs)
    console(
        f"sweep interrupted by {signal_name}: {done} of {len(jobs)} jobs completed; "
        f"report → {report}; to continue: {resume_command(str(sweep_dir), multirun=True)}"
    )


def sweep_started(sweep_dir: Path) -> None:
    """A new launch of the sweep in `sweep_dir`: its job outcomes are recorded afresh."""
    _SWEEP.clear()
    _SWEEP["dir"] = sweep_dir
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / LAUNCH_LOG).write_text("")


def sweep_stopped(signal_name: str) -> None:
    """A job of this process was interrupted: the jobs after it in this process do not start."""
    _SWEEP["stop"] = signal_name


def stopping() -> str | None:
    return _SWEEP.get("stop")  # type: ignore[return-value]


def _append(sweep_dir: Path, record: dict) -> None:
    with open(sweep_dir / LAUNCH_LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def note_job(run_dir: Path, status: Status, message: str) -> None:
    """Record how this launch's job in `run_dir` ended (in a sweep job's process)."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    sweep_dir = Path(hc.sweep.dir)
    job = Path(run_dir).resolve().relative_to(sweep_dir.resolve()).as_posix()
    record = {"job": job, "status": status.value, "message": message}
    _append(sweep_dir, {**record, "overrides": list(hc.overrides.task)})


def note_lost_job(sweep_dir: Path, job_dir: Path, overrides: list[str], why: str) -> None:
    """A job whose process ended without a result (killed): its unfinished run is marked failed
    (the next resume=true continues it from its last checkpoint), and the launch log says so."""
    from ntklab.rundir import RunFolder

    folder = RunFolder(job_dir)
    message = f"{why}; resume the sweep (resume=true) to continue it from its last checkpoint"
    if folder.owned and folder.read_summary() is None:
        folder.write_failed(message)
    job = job_dir.resolve().relative_to(sweep_dir.resolve()).as_posix()
    _append(sweep_dir, {"job": job, "status": Status.FAILED.value, "message": message,
                        "overrides": overrides})  # fmt: skip
