"""Stand-in PBS ``qsub`` / ``qstat`` for queue-launcher tests. ``qsub`` copies the job script
to ``$STANDIN_PBS_DIR/job-N.script`` (a batch system spools its own copy), starts that copy in
the background with a clean environment (``env -i``, only ``HOME`` and a minimal ``PATH``, from
the submit folder) and prints ``N.standin``; its exit status goes to ``job-N.rc``.
``qstat -u USER`` prints the running jobs in PBS's column layout, which FireWorks' PBS adapter
parses."""

from __future__ import annotations

import stat
import time
from pathlib import Path

QSUB = r"""#!/bin/bash
set -e
script="$1"
state="${STANDIN_PBS_DIR:?}"
exec 9>"$state/lock"
flock 9
n=$(( $(cat "$state/last_id" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$state/last_id"
flock -u 9
queue=$(sed -n 's/^#PBS -q //p' "$script" | head -1)
cp "$script" "$state/job-$n.script"
echo "$queue" > "$state/job-$n.queue"
( env -i HOME="$HOME" PATH=/usr/bin:/bin PBS_JOBID="$n.standin" bash "$state/job-$n.script" \
    > "$PWD/pbs-$n.out" 2>&1 < /dev/null; echo $? > "$state/job-$n.rc" ) > /dev/null 2>&1 &
echo "$n.standin"
"""

QSTAT = r"""#!/bin/bash
state="${STANDIN_PBS_DIR:?}"
echo "Job ID Name User Time Use S Queue"
echo "------ ---- ---- -------- - -----"
for f in "$state"/job-*.queue; do
  [ -e "$f" ] || continue
  n=${f%.queue}
  [ -e "$n.rc" ] && continue
  id=$(basename "$n"); id=${id#job-}
  echo "$id.standin smoacs ${USER:-root} 00:00 00 R $(cat "$f")"
done
"""


def install(bin_dir: Path, state_dir: Path) -> None:
    """Write the stand-in ``qsub`` and ``qstat`` into ``bin_dir``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("qsub", QSUB), ("qstat", QSTAT)):
        p = bin_dir / name
        p.write_text(text)
        p.chmod(p.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def jobs(state_dir: Path) -> dict[int, dict]:
    """``{job id: {script, queue, rc}}`` of every job submitted so far."""
    out = {}
    for s in state_dir.glob("job-*.script"):
        n = int(s.stem.split("-")[1])
        rc = s.with_suffix(".rc")
        out[n] = {
            "script": s.read_text(),
            "queue": s.with_suffix(".queue").read_text().strip(),
            "rc": int(rc.read_text()) if rc.exists() else None,
        }
    return out


def wait_all(state_dir: Path, timeout: float = 300) -> None:
    """Wait until every submitted job has ended."""
    t0 = time.monotonic()
    while any(j["rc"] is None for j in jobs(state_dir).values()):
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"stand-in PBS jobs still running after {timeout} s")
        time.sleep(0.5)
