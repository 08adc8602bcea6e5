"""The stream supervisor starts the job on the code of the checkout it was started from."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from jobs.stream_supervisor import REPO, job_environment


def test_the_job_environment_imports_this_checkouts_packages(tmp_path):
    # The environments install photoscore in editable mode for one checkout: from a worktree, a
    # job started without PYTHONPATH imported that checkout's `udfs`, not this one's.
    env = job_environment(sys.executable, dict(os.environ, PYTHONPATH="/elsewhere"))
    out = subprocess.run([sys.executable, "-c", "import jobs, udfs; print(udfs.__file__); print(jobs.__file__)"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    for path in out.stdout.split():
        assert Path(path).resolve().is_relative_to(REPO), (path, REPO)
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
