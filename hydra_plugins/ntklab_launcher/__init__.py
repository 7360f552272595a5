"""ntklab's launchers: Hydra's joblib and submitit launchers, made to finish a sweep whatever
happens to one job, so that its report is written and its exit status says what happened.

Hydra takes launcher classes only from the `hydra_plugins` namespace package, hence this home;
ntklab.cli registers them (Hydra's plugin scan does not see an editable install).

- joblib: each job runs in a worker process of its own (a one-worker loky executor, up to
  `n_jobs` at once). In the stock launcher all jobs share one pool, and a worker killed (by the
  OOM killer, `kill -9`) breaks the pool: every running job dies with it and the launching
  process raises. Here the killed job is recorded as failed and the others finish.
- submitit (local and SLURM): a job that leaves no result (killed, cancelled, a lost node) is
  recorded as failed instead of raising in the launching process before the report. A SLURM
  job started again (`scontrol requeue`, a preemption with PreemptMode=REQUEUE, submitit's own
  requeue on SIGUSR2 near the time limit) has SLURM_RESTART_COUNT ≥ 1: it runs with
  resume=true and continues its run from checkpoints/last.pt.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra_plugins.hydra_joblib_launcher import _core as joblib_core
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher as _Joblib
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


def _lost(launcher: Any, overrides: Sequence[str], why: str) -> JobReturn:
    """A job whose process ended without a result: recorded as failed (in its folder when it
    holds an unfinished run, and in the sweep's launch log); the sweep goes on."""
    from ntklab.launch import note_lost_job

    config = launcher.hydra_context.config_loader.load_sweep_config(
        launcher.config, list(overrides)
    )
    job_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
    note_lost_job(Path(str(config.hydra.sweep.dir)), job_dir, list(overrides), why)
    log.warning("job %s ended without a result: %s", " ".join(filter_overrides(overrides)), why)
    ret = JobReturn(overrides=list(overrides))
    ret.status, ret.return_value = JobStatus.COMPLETED, None
    return ret


class JoblibLauncher(_Joblib):
    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from joblib.externals.loky import ProcessPoolExecutor
        from joblib.externals.loky.process_executor import TerminatedWorkerError

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        n_jobs = int(self.joblib.get("n_jobs") or -1)
        n_jobs = n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)
        state = Singleton.get_state()

        def one(idx: int, overrides: Sequence[str]) -> JobReturn:
            with ProcessPoolExecutor(max_workers=1) as worker:  # its own process
                job = worker.submit(
                    joblib_core.execute_job, initial_job_idx + idx, overrides,
                    self.hydra_context, self.config, self.task_function, state,
                )  # fmt: skip
                try:
                    return job.result()
                except TerminatedWorkerError as err:
                    return _lost(
                        self, overrides, f"its process was killed ({err.__class__.__name__})"
                    )

        log.info("ntklab's joblib launcher: %d jobs, %d at a time", len(job_overrides), n_jobs)
        with ThreadPoolExecutor(n_jobs) as pool:
            return list(pool.map(one, range(len(job_overrides)), job_overrides))


class _Submitit(BaseSubmititLauncher):
    def _executor(self) -> Any:
        """submitit's executor with the launcher's parameters, as hydra-submitit-launcher maps
        them: executor-specific keys get the executor's prefix."""
        import submitit

        params = dict(self.params)
        folder = params.pop("submitit_folder")
        timeouts = {}
        if "max_num_timeout" in params:
            timeouts[f"{self._EXECUTOR}_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, folder=folder, **timeouts)
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{k if k in shared else f"{self._EXECUTOR}_{k}": v for k, v in params.items()}
        )
        return executor

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        import submitit

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        state = Singleton.get_state()
        arguments = [
            (
                list(o),
                "hydra.sweep.dir",
                initial_job_idx + i,
                f"job_id_for_{initial_job_idx + i}",
                state,
            )
            for i, o in enumerate(job_overrides)
        ]
        jobs = self._executor().map_array(self, *zip(*arguments, strict=True))
        returns = []
        for job, overrides in zip(jobs, job_overrides, strict=True):
            try:
                returns.append(job.results()[0])
            except submitit.core.utils.UncompletedJobError as err:
                why = str(err).splitlines()[0]
                returns.append(_lost(self, overrides, f"job {job.job_id} left no result ({why})"))
        return returns


class LocalLauncher(_Submitit):
    _EXECUTOR = "local"


class SlurmLauncher(_Submitit):
    _EXECUTOR = "slurm"

    def __call__(self, sweep_overrides: list[str], *args: Any, **kwargs: Any) -> JobReturn:
        """In the SLURM job: a job started again (requeued) continues its run."""
        restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
        if restarts.isdigit() and int(restarts) > 0:
            kept = [o for o in sweep_overrides if o.split("=", 1)[0].lstrip("+~") != "resume"]
            sweep_overrides = [*kept, "resume=true"]
        return super().__call__(sweep_overrides, *args, **kwargs)


LAUNCHERS = (JoblibLauncher, LocalLauncher, SlurmLauncher)
