"""`cnnlab train` on several processes: the launcher side (`--nproc N`) and the worker side (a
process started by torchrun).

    torchrun --standalone --nproc-per-node N -m cnnlab train MODEL ...   # torchrun starts workers
    cnnlab train MODEL ... --nproc N                                     # the same, in one command

`--nproc N` runs torchrun's own launcher (`torch.distributed.run`) in this process, on this
machine (127.0.0.1), after checking the arguments and the run directory here first: a bad input
is one line and exit status 2 before any worker starts. Exit status of the job: as `cnnlab train`'s
(0 done, 2 a user error, 3 a non-finite loss, 130 / 143 stopped by SIGINT / SIGTERM after rank 0
saved last.pt), and 1 when a worker died (the line names its rank and signal; last.pt is intact)
or failed otherwise.

A worker (`run_worker`) joins the process group, checks the arguments and the directory on every
process (`DistContext.agree`: rank 0 alone prints a refusal; every process exits 2), resumes
by itself after a torchrun restart (`--max-restarts`), and ends with one line when another
process of the group died (rank 0 writes; others print nothing but bugs' tracebacks).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import socket
import sys
from pathlib import Path

from cnnlab.errors import UserError

NPROC_ENV = "CNNLAB_NPROC"  # set by `--nproc N` for its workers: the launcher reports for them
EXIT_FAILED = 1             # a process of the job died or failed
# Exit statuses of workers that only followed another's failure: stopped by torchrun (SIGTERM,
# SIGINT) or left when their process group broke.
_CONSEQUENCES = {-signal.SIGTERM, -signal.SIGINT, EXIT_FAILED}


HELP = """\
Data-parallel: `--nproc N` trains on N processes of this machine, as does
`torchrun --standalone --nproc-per-node N -m cnnlab train MODEL ...`; several machines:
`torchrun --nnodes M --nproc-per-node N --rdzv-backend c10d --rdzv-endpoint HOST:PORT
--rdzv-id ID -m cnnlab train MODEL --out SHARED_DIR ...` on each. Every process trains on its
shard of each batch: the same result as one process, within float rounding. Rank 0 writes DIR.
Every process runs the fast operators' rules (not the autotuner: timing on each process could
choose differently), or a resumed run's recorded algorithms.
"""


def add_arguments(p) -> None:
    """The data-parallel options of `cnnlab train`."""
    from cnnlab.train.config import DIST_TIMEOUT_S  # no torch: --help stays fast

    g = p.add_argument_group("data-parallel training (torch.distributed)")
    g.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="train on N processes of this machine by starting torchrun's launcher "
                        "(gloo on CPU with 1 thread each, NCCL with one GPU each); the same as "
                        "`torchrun --standalone --nproc-per-node N -m cnnlab train ...` (ignored "
                        "in the processes torchrun starts)")
    g.add_argument("--max-restarts", type=int, default=0, metavar="K",
                   help="with --nproc: restart the processes up to K times after a failure; the "
                        "restarted run resumes from DIR/last.pt by itself (default 0)")
    g.add_argument("--dist-timeout", type=float, default=DIST_TIMEOUT_S, metavar="SECONDS",
                   help="a process that waits longer than this for the others (start, any "
                        f"collective) fails instead of hanging (default {DIST_TIMEOUT_S})")


def wants_launcher(args) -> bool:
    """--nproc given in a process that torchrun did not start."""
    from cnnlab.train.distributed import launched

    return getattr(args, "nproc", None) is not None and not launched()


# ----------------------------------------------------------------------------- the launcher

def launch_training(args, train_checks) -> int:
    """`cnnlab train ... --nproc N`: check here, then run torchrun's launcher on this command.

    train_checks(args): the worker's own checks (raise UserError), run here once first."""
    from cnnlab.train.distributed import check_device
    from cnnlab.train.validate import check_int

    nproc = check_int("--nproc", args.nproc, 1)
    check_int("--max-restarts", args.max_restarts, 0)
    check_timeout(args)
    check_device(args.device, nproc - 1)  # one GPU per process
    checked = argparse.Namespace(**{**vars(args), "quiet": True})
    cfg, resume = train_checks(checked)
    _check_directory(cfg.out, resuming=resume is not None or args.overwrite)

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    launcher = parse_args(["--standalone", "--nproc-per-node", str(nproc), "--max-restarts",
                           str(args.max_restarts), "--local-addr", "127.0.0.1", "-m", "cnnlab"])
    # The workers run this very command (their --nproc is ignored under torchrun); set after
    # parsing, or torchrun's parser would take --nproc for its own --nproc-per-node.
    launcher.training_script_args = list(args.argv)
    _quiet_torchrun_logs()
    os.environ[NPROC_ENV] = str(nproc)
    if "GLOO_SOCKET_IFNAME" not in os.environ and "lo" in dict(socket.if_nameindex()).values():
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # one machine: gloo on the loopback only
    try:
        run(launcher)
    except SignalException as err:  # Ctrl-C / SIGTERM: torchrun passed it on, workers saved
        return 128 + int(err.sigval)
    except ChildFailedError as err:
        return _report_failures(err, cfg, nproc)
    finally:
        os.environ.pop(NPROC_ENV, None)  # (GLOO_SOCKET_IFNAME stays: this process ends here)
    return 0


def check_timeout(args) -> None:
    if not args.dist_timeout > 0:
        raise UserError(f"--dist-timeout must be > 0 seconds, got {args.dist_timeout}")


def _check_directory(out, resuming: bool) -> None:
    """What rank 0 will check: a writable folder, not locked, no other run (unless resuming or
    overwriting). Nothing is written; a folder created for the check is removed again."""
    from cnnlab.train.rundir import run_directory

    with run_directory(out, resuming=resuming, overwrite=False):
        pass


def _quiet_torchrun_logs() -> None:
    """torchrun's launcher logs its settings and every failure as warnings; cnnlab reports the
    outcome in one line instead (LOGLEVEL set by the user keeps torch's logging)."""
    if "LOGLEVEL" in os.environ:
        return
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _report_failures(err, cfg, nproc: int) -> int:
    """One line for a job whose workers failed -> its exit status."""
    codes = {f.exitcode for f in err.failures.values()} - _CONSEQUENCES
    if len(codes) == 1 and codes <= {2, 3, 130, 143}:
        # the processes stopped for a reason rank 0 printed (a user error, a NaN loss, a signal)
        return codes.pop()
    rank, failure = _root_cause(err)
    what = (f"was killed by {failure.signal_name()}" if failure.exitcode < 0
            else f"failed with exit status {failure.exitcode}")
    print(f"cnnlab train: error: rank {rank} (pid {failure.pid}) {what}; the job stopped; "
          f"{_last_checkpoint(cfg, nproc)}", file=sys.stderr, flush=True)
    return EXIT_FAILED


def _root_cause(err):
    """-> (rank, ProcessFailure) of the process that failed first. torchrun stops the others
    with SIGTERM (or they lose their peer and exit 1): those are consequences, not causes."""
    def weight(item):
        rank, failure = item
        return (failure.exitcode in _CONSEQUENCES, failure.timestamp, rank)
    return min(err.failures.items(), key=weight)


def _last_checkpoint(cfg, nproc: int) -> str:
    from cnnlab.train.checkpoint import load_checkpoint
    from cnnlab.train.resume import resume_command

    last = Path(cfg.out) / "last.pt"
    if not last.is_file():
        return f"no {last} was written yet"
    try:
        step = load_checkpoint(last).get("step")
    except UserError as err:  # never seen (atomic writes), but the job's line must still come
        return f"{last} cannot be read: {err}"
    command = resume_command(cfg.model, cfg.epochs, cfg.out, ["--nproc", str(nproc)])
    return f"{last} holds step {step}: to resume: {command}"


# ----------------------------------------------------------------------------- the worker

def run_worker(args, train) -> int:
    """Run `train(args, dist)` in a process torchrun started -> its exit status.

    Rank 0 prints and writes; the others run silently (a bug's traceback still shows). A
    UserError is raised on rank 0 (one line from the CLI) and exit status 2 elsewhere; a broken
    process group (another process died or hung) ends this process at once with one line and
    status 1.
    """
    from cnnlab.train.distributed import DistContext, is_broken_group

    main = os.environ.get("RANK") == "0"
    if not main:
        args.quiet = True
    try:
        check_timeout(args)
        dist = DistContext.from_env(args.device, args.dist_timeout)
    except UserError:
        if main:
            raise
        return 2
    try:
        with _silenced(not main):
            code = train(args, dist)
    except UserError:
        dist.close(together=False)
        if main:
            raise
        return 2
    except Exception as err:  # noqa: BLE001 -- only a broken group is handled here
        if not is_broken_group(err):
            raise
        if NPROC_ENV not in os.environ:  # under --nproc the launcher prints the one line
            print(f"cnnlab train: error: rank {dist.rank}: the process group broke (another "
                  f"process of the job died or stopped answering: {_reason(err)}); the last "
                  "saved last.pt is intact", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # Leave at once: tearing down a broken gloo/NCCL group can hang or abort, and every
        # file this process wrote is complete (atomic writes).
        os._exit(EXIT_FAILED)
    dist.close()
    return code


def _reason(err) -> str:
    """'Connection reset by peer' from gloo's '[.../pair.cc:545] Read error [127.0.0.1]:5847:
    Connection reset by peer. This is typically caused by ...'."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)  # the C++ source location
    return text.split(". ")[0][:160]


@contextlib.contextmanager
def _silenced(silent: bool):
    if not silent:
        yield
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), \
            contextlib.redirect_stderr(devnull):
        yield


def resume_after_restart(args, dist, out) -> None:
    """After a torchrun restart, continue this job's run from `out`/last.pt (written by an
    earlier attempt of the same job) instead of starting afresh."""
    from cnnlab.train.distributed import restart_target

    if args.resume or restart_target(out, dist) is None:
        return
    args.resume, args.overwrite, args.init = str(out), False, None
    if dist.is_main:  # an exceptional event: said even with --quiet
        print(f"cnnlab train: torchrun restart {dist.restart}: resuming {out}/last.pt",
              file=sys.stderr, flush=True)


def settings_fingerprint(cfg, resume) -> dict:
    """What every process of a run must agree on: the settings that change the result, and the
    checkpoint resumed."""
    from cnnlab.train.resume import RESULT_SETTINGS

    config = cfg.to_dict()
    same = {key: config[key] for key in (*RESULT_SETTINGS, "epochs", "init", "weight_init")}
    if resume is not None:
        same["resume"] = (resume["run_id"], resume["step"])
    return same
