"""A warm ``python -m kiln``: imports kiln once, then runs each requested command line in a
forked child, exactly as ``python -m kiln ARGS`` runs it (``runpy`` on the ``kiln`` package
as ``__main__``), with the child's stdout and stderr in files and its end (exit status, the
signal that killed it, or the timeout) reported back.

Starting a fresh interpreter costs some 4 s here (TVM and its imports); a fork costs
milliseconds, so every hostile model can run in a process of its own. Protocol: one JSON
object per line on stdin, ``{"argv": [...], "env": {...}, "stdout": PATH, "stderr": PATH,
"timeout": SECONDS}``; one JSON object per line on stdout, ``{"status": int | null,
"signal": int | null, "timed_out": bool, "seconds": float}``.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import sys
import time
import traceback

import kiln.cli  # noqa: F401  (the import the children share)


def _child(request: dict) -> None:
    """Run the command line in this (forked) process and leave with its exit status."""
    status = 1
    try:
        for fd, key in ((1, "stdout"), (2, "stderr")):
            f = os.open(request[key], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(f, fd)
            os.close(f)
        os.environ.update(request.get("env", {}))
        sys.argv = ["kiln", *request["argv"]]
        try:
            runpy.run_module("kiln", run_name="__main__", alter_sys=True)
            status = 0
        except SystemExit as e:       # what `python -m kiln` ends with
            status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:         # as the interpreter reports an uncaught exception
            traceback.print_exc()
            status = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)


def run(request: dict) -> dict:
    """Fork, run ``request`` in the child, wait for it at most ``timeout`` seconds."""
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(request)
    deadline = start + float(request["timeout"])
    timed_out = False
    while True:
        done, wait_status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            timed_out = True
            os.kill(pid, signal.SIGKILL)
            _, wait_status = os.waitpid(pid, 0)
            break
        time.sleep(0.01)
    seconds = time.monotonic() - start
    if os.WIFSIGNALED(wait_status):
        return {"status": None, "signal": os.WTERMSIG(wait_status), "timed_out": timed_out,
                "seconds": seconds}
    return {"status": os.WEXITSTATUS(wait_status), "signal": None, "timed_out": timed_out,
            "seconds": seconds}


def main() -> None:
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(run(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
