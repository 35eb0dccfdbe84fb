"""Stand-in ``sbatch`` / ``squeue`` for queue-launcher tests: ``sbatch`` runs the job script in
the background (in the folder it was called from, as SLURM does with the submit folder) and
prints SLURM's ``Submitted batch job N`` (the job sees ``SLURM_JOB_ID`` and, from its
``--cpus-per-task``, ``SLURM_CPUS_PER_TASK``); ``squeue`` lists the jobs still running (of the
``-p`` partition when given). Each job's script is copied to ``$STANDIN_SLURM_DIR/job-N.script``
and its exit status written to ``job-N.rc`` when it ends."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

SBATCH = r"""#!/bin/bash
set -e
script="$1"
state="${STANDIN_SLURM_DIR:?}"
exec 9>"$state/lock"
flock 9
n=$(( $(cat "$state/last_id" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$state/last_id"
flock -u 9
part=$(sed -n 's/^#SBATCH --partition=//p' "$script" | head -1)
cpus=$(sed -n 's/^#SBATCH --cpus-per-task=//p' "$script" | head -1)
cp "$script" "$state/job-$n.script"
echo "$part" > "$state/job-$n.part"
( SLURM_JOB_ID=$n SLURM_CPUS_PER_TASK=${cpus:-1} \
    bash "$script" > "$PWD/slurm-$n.out" 2>&1 < /dev/null; \
  echo $? > "$state/job-$n.rc" ) > /dev/null 2>&1 &
echo "Submitted batch job $n"
"""

SQUEUE = r"""#!/bin/bash
state="${STANDIN_SLURM_DIR:?}"
part=""
while [ $# -gt 0 ]; do
  case "$1" in -p) part="$2"; shift 2;; *) shift;; esac
done
for f in "$state"/job-*.part; do
  [ -e "$f" ] || continue
  n=${f%.part}
  [ -e "$n.rc" ] && continue
  if [ -z "$part" ] || [ "$(cat "$f")" = "$part" ]; then echo "${USER:-user}"; fi
done
"""


def install(bin_dir: Path, state_dir: Path) -> None:
    """Write the stand-in ``sbatch`` and ``squeue`` into ``bin_dir``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("sbatch", SBATCH), ("squeue", SQUEUE)):
        p = bin_dir / name
        p.write_text(text)
        p.chmod(p.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def jobs(state_dir: Path) -> dict[int, dict]:
    """``{job id: {script, partition, rc}}`` of every job submitted so far."""
    out = {}
    for s in state_dir.glob("job-*.script"):
        n = int(s.stem.split("-")[1])
        rc = s.with_suffix(".rc")
        out[n] = {
            "script": s.read_text(),
            "partition": s.with_suffix(".part").read_text().strip(),
            "rc": int(rc.read_text()) if rc.exists() else None,
        }
    return out


def wait_all(state_dir: Path, timeout: float = 600) -> None:
    """Wait until every submitted job has ended."""
    t0 = time.monotonic()
    while any(j["rc"] is None for j in jobs(state_dir).values()):
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"stand-in SLURM jobs still running after {timeout} s")
        time.sleep(0.5)


def qlaunch_singleshot(
    tmp_path: Path, queue_dir: Path, add_code: str, server: Path, **env_extra: str
) -> tuple[subprocess.CompletedProcess[str], Path, dict[int, dict]]:
    """FireWorks' own ``qlaunch -c QUEUE_DIR singleshot`` on the stand-in ``sbatch``, with a
    mongomock-server LaunchPad (``server``) filled first by ``add_code`` (Python, run with the
    same environment). Returns qlaunch's result, the folder it ran in and the finished jobs."""
    from tests.makers._campaign import ROOT

    bin_dir = Path(sys.executable).parent
    env = dict(os.environ)
    env.update(
        MONGOMOCK_SERVERSTORE_FILE=str(server),
        STANDIN_SLURM_DIR=str(tmp_path / "slurm"),
        PATH=os.pathsep.join([str(tmp_path / "bin"), str(bin_dir), env["PATH"]]),
        PYTHONPATH=str(ROOT),
        **env_extra,
    )
    env.pop("FW_CONFIG_FILE", None)
    install(tmp_path / "bin", tmp_path / "slurm")
    r = subprocess.run([sys.executable, "-c", add_code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    run = tmp_path / "run"
    run.mkdir()
    r = subprocess.run(
        [str(bin_dir / "qlaunch"), "-c", str(queue_dir), "singleshot"],
        cwd=run, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    wait_all(tmp_path / "slurm", timeout=300)
    return r, run, jobs(tmp_path / "slurm")
