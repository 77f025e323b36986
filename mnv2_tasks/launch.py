"""Where this process sits in a launch (one process, Lightning's own launcher, ``torchrun``, SLURM's ``srun``),
and the three things that depend on it:

- **the run's name** (``run_name``), hence its directory ``outputs/<task>/<run_name>``, the same on every rank
  of a job, decided without talking to the other ranks: the name you give (``run_name=...``); else SLURM's job id
  (``slurm-<job>``; array tasks ``slurm-<job>_<task>``; a job step after the first ``-step<N>``), which a requeued
  job keeps, so it finds its own checkpoints again; else torchrun's rendezvous id (``--rdzv-id``, or the uuid of
  ``--standalone``); else, under torchrun on one node, the start time and pid of torchrun's agent process, which
  all its workers share; else (one process) the start time, made unique on disk so that two jobs started in the
  same second do not share a directory. torchrun over several nodes with none of these names is refused: every
  node would pick another one.
- **work done once per node** (``once_per_node``): the embedded data set and the embedded pretraining are made
  by local rank 0 while the other ranks of the node wait for the result on disk, under a file lock against other
  jobs and nodes sharing the disk; results are published by an atomic rename, so a finished one is never removed.
- **a nested single-process run** (``single_process_env``): the embedded pretraining trains in rank 0 with
  the launcher's variables hidden, or Lightning would join it to the job's process group.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

__all__ = ["ranks", "run_name", "job_key", "cache_dir", "once_per_node", "single_process_env", "register_resolvers", "LaunchError"]

log = logging.getLogger(__name__)

# the variables through which launchers tell a process its place (torchrun / torch.distributed, Lightning's
# launcher, SLURM's srun): hidden from a nested single-process run
_LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
                "ROLE_NAME", "ROLE_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
                "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS", "TORCHELASTIC_USE_AGENT_STORE",
                "TORCHELASTIC_ERROR_FILE", "PL_GLOBAL_SEED", "PL_SEED_WORKERS")
_TIME_FORMAT = "%Y-%m-%d_%H-%M-%S"


class LaunchError(RuntimeError):
    """A launch this package cannot run correctly; the message says what to set."""


def _int_env(*names: str) -> int | None:
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip().lstrip("-").isdigit():
            return int(value)
    return None


def _under_srun() -> bool:
    """A task of ``srun`` (not the batch script itself, whose SLURM_PROCID is 0 of 1)."""
    return "SLURM_STEP_ID" in os.environ and "SLURM_PROCID" in os.environ and "SLURM_NTASKS" in os.environ


def ranks() -> tuple[int, int, int]:
    """``(global rank, local rank, world size)`` of this process, read from the launcher's environment
    (before any process group exists): torchrun / Lightning's launcher, then srun, else ``(0, 0, 1)``."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return _int_env("RANK") or 0, _int_env("LOCAL_RANK") or 0, _int_env("WORLD_SIZE") or 1
    if _under_srun():
        return _int_env("SLURM_PROCID") or 0, _int_env("SLURM_LOCALID") or 0, _int_env("SLURM_NTASKS") or 1
    local = _int_env("LOCAL_RANK")  # a child of Lightning's launcher (it sets LOCAL_RANK, and NODE_RANK on clusters)
    if local:
        return local, local, _int_env("WORLD_SIZE") or local + 1
    return 0, 0, 1


def _process_start(pid: int) -> _dt.datetime | None:
    """When process ``pid`` started (Linux ``/proc``), to the second; None where that cannot be read."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
        return _dt.datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _claim_new(parent: Path, stem: str) -> str:
    """``stem``, or ``stem-2``, ``stem-3``... : the first whose directory under ``parent`` this call creates."""
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        name = stem if n == 1 else f"{stem}-{n}"
        try:
            (parent / name).mkdir()
            return name
        except FileExistsError:
            continue
    raise LaunchError(f"{parent}: a thousand runs named {stem}*; pass run_name=<name>")


_CHOSEN: dict[str, str] = {}


def job_key() -> str | None:
    """What names this job the same on all its ranks, from the launcher's environment alone: SLURM's job id (array
    task, later step), torchrun's rendezvous id, or on one node torchrun's agent (start time and pid); None for one
    process, Lightning's launcher, and torchrun over several nodes without an id."""
    env = os.environ
    if env.get("SLURM_JOB_ID"):
        if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
            name = f"slurm-{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
        else:
            name = f"slurm-{env['SLURM_JOB_ID']}"
        step = _int_env("SLURM_STEP_ID")
        if step is not None and 0 < step < 0xFFFFFF00:  # a later srun step of the same job (the batch step is 0xFFFFFFFB)
            name += f"-step{step}"
        return name
    if env.get("TORCHELASTIC_RUN_ID") not in (None, "", "none"):
        return f"torchrun-{env['TORCHELASTIC_RUN_ID']}"
    if "TORCHELASTIC_RUN_ID" in env and (_int_env("LOCAL_WORLD_SIZE") or 1) == (_int_env("WORLD_SIZE") or 1):
        agent = os.getppid()
        started = _process_start(agent)
        return f"{started.strftime(_TIME_FORMAT)}-torchrun{agent}" if started else f"torchrun{agent}"
    return None


def cache_dir() -> Path:
    """Where work shared by the ranks of a job is kept (``$MNV2_TASKS_DATA``, else ``~/.cache/mnv2_tasks``)."""
    return Path(os.environ.get("MNV2_TASKS_DATA") or Path.home() / ".cache" / "mnv2_tasks")


def run_name(given: str | None = None, parent: str | None = None) -> str:
    """The run's name, the same on every rank of a job (see the module docstring). ``parent``: the folder the run
    directory goes in, where a name taken from the clock is claimed (one process only). Decided once per process."""
    if given not in (None, "", "None", "null"):
        return str(given)
    key = str(parent)
    if key in _CHOSEN:
        return _CHOSEN[key]
    job = job_key()
    if job is not None:
        name = job
    elif "TORCHELASTIC_RUN_ID" in os.environ:  # torchrun over several nodes without a rendezvous id
        raise LaunchError("torchrun over several nodes without a rendezvous id: every node would name its run "
                          "directory differently. Pass run_name=<name> (the same on every node) or torchrun "
                          "--rdzv-id=<job id>")
    elif ranks()[2] > 1:  # another launcher that sets RANK/WORLD_SIZE and no job id
        raise LaunchError("a distributed launch without a job id: pass run_name=<name>, the same on every rank, so "
                          "that all ranks write one run directory")
    else:
        stem = _dt.datetime.now().strftime(_TIME_FORMAT)
        name = _claim_new(Path(parent), stem) if parent else stem
    _CHOSEN[key] = name
    return name


def register_resolvers() -> None:
    """``${mnv2_run_name:<given>,<parent>}`` and ``${mnv2_rank_suffix:}`` (``""`` on rank 0, ``_rank<N>`` elsewhere:
    each rank's own log file) for ``conf/hydra/default.yaml`` (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("mnv2_run_name"):
        OmegaConf.register_new_resolver("mnv2_run_name", lambda given=None, parent=None: run_name(given, parent),
                                        use_cache=False)
    if not OmegaConf.has_resolver("mnv2_rank_suffix"):
        OmegaConf.register_new_resolver("mnv2_rank_suffix", lambda: f"_rank{ranks()[0]}" if ranks()[0] else "")


def once_per_node(what: str, ready: Callable[[], bool], make: Callable[[], object], lock: Path,
                  timeout_s: float = 6 * 3600, poll_s: float = 2.0) -> None:
    """Make something on disk once: local rank 0 calls ``make()`` (under a file lock at ``lock``, so that jobs
    and nodes sharing the disk make it once too) unless ``ready()``; the other ranks of the node wait until
    ``ready()``, saying so, and give up with an error after ``timeout_s``."""
    if ready():
        return
    rank, local, world = ranks()
    if local != 0:
        log.info("rank %d: waiting for local rank 0 to %s", rank, what)
        start = last_said = time.monotonic()
        while not ready():
            now = time.monotonic()
            if now - start > timeout_s:
                raise LaunchError(f"rank {rank}: waited {timeout_s:.0f} s for local rank 0 to {what}; did it fail? "
                                  "(its log says why)")
            if now - last_said > 60:
                log.info("rank %d: still waiting (%.0f s) for local rank 0 to %s", rank, now - start, what)
                last_said = now
            time.sleep(poll_s)
        return
    from filelock import FileLock

    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):
        if not ready():  # another job or node made it while this one waited for the lock
            if world > 1:
                log.info("rank %d (local rank 0 of a %d-rank job): %s", rank, world, what)
            make()


def host_tag() -> str:
    """``<host>-<pid>``: names a temporary folder as this process's, on a disk other hosts may share."""
    return f"{socket.gethostname().split('.')[0]}-{os.getpid()}"


@contextmanager
def single_process_env():
    """Hide the launcher's variables (torchrun, Lightning's launcher, SLURM) for a nested single-process run,
    and put them back after."""
    saved = {k: v for k, v in os.environ.items() if k in _LAUNCH_VARS or k.startswith("SLURM_")}
    for k in saved:
        del os.environ[k]
    try:
        yield
    finally:
        os.environ.update(saved)
