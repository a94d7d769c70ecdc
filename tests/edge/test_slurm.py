"""slurm/full_survey.sh and slurm/image3.sh on a real one-node Slurm (started for the session).

- a survey submitted with `sbatch` runs its units under `srun --mpi=pmi2`, hands over to one
  Image3 job (afterok), which makes the mosaic and passes `dream-hpc audit`; the journal records
  the Slurm job id and node list;
- `scancel` part-way, then resubmitting, finishes the survey without redoing finished units;
- the time-limit warning (SIGUSR1 to the batch script) stops the engine taking units, requeues
  the job, and the requeued job resumes and finishes;
- the Slurm run and the same config under `mpiexec -n 2` compare bit-identical.
The survey is small (4 units of one detector, one filter) to keep these tests short.
"""

from __future__ import annotations

import datetime
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _slurm_survey_fixtures import (
    JOB_TIMEOUT_S,
    SLURM,
    VENV,
    Submission,
    assert_each_unit_done_once,
    assert_mosaic_and_audit,
    journal_records,
    submit,
    units_done,
)

from dream_hpc.drivers.binds import bind_paths, outermost


# --- no Slurm needed -----------------------------------------------------------------------------
def test_outermost_folds_nested_and_duplicate_paths() -> None:
    paths = [Path("/a/run"), Path("/a"), Path("/b/c"), Path("/b/c"), Path("/b/cd"), Path("/b/c/d/e")]
    assert outermost(paths) == [Path("/a"), Path("/b/c"), Path("/b/cd")]


def test_bind_paths_follow_the_config(tmp_path: Path) -> None:
    from dream_hpc.config import load_config

    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    (cfg_dir / "survey.yaml").write_text(
        "catalog: {path: cats/dream.fits}\n"
        f"references: {{crds_path: {tmp_path}/kit/crds_cache, mirage_data: /data/mirage}}\n")
    binds = bind_paths(load_config(cfg_dir / "survey.yaml"), tmp_path / "run")
    assert binds[0] == (tmp_path / "run").resolve()
    assert cfg_dir.resolve() in binds and (cfg_dir / "cats").resolve() not in binds  # folded into the config dir
    assert (tmp_path / "kit" / "crds_cache").resolve() in binds
    assert (tmp_path / "kit" / "manifest.json").resolve() in binds  # the kit's identity, for provenance
    assert Path("/data/mirage") in binds


def test_scripts_keep_the_environment_and_ask_for_the_warning() -> None:
    survey = (SLURM / "full_survey.sh").read_text()
    image3 = (SLURM / "image3.sh").read_text()
    common = (SLURM / "common.sh").read_text()
    code = "\n".join(ln for ln in common.splitlines() if not ln.lstrip().startswith("#"))
    calls = re.findall(r"apptainer exec(.*?)\"\$DREAM_IMAGE\"", code, flags=re.S)
    assert len(calls) == 2, "expected the bind query and the launcher in slurm/common.sh"
    for options in calls:
        assert not re.search(r"(?<!\S)(--cleanenv|--containall|-e|-C)(?!\S)", options), \
            f"apptainer exec{options}: must pass SLURM_* and APPTAINER_CONTAINER through (provenance)"
    directives = [ln.split(None, 1)[1] for ln in survey.splitlines() if ln.startswith("#SBATCH")]
    assert any(d.startswith("--signal=B:USR1@") for d in directives)
    assert "--requeue" in directives and any("%j" in d for d in directives if d.startswith("--output"))
    assert "--ntasks=2" in [ln.split(None, 1)[1] for ln in image3.splitlines() if ln.startswith("#SBATCH")]
    assert 'srun "${srun_args[@]}"' in image3 and "pmi2" in image3  # the tiles run on every rank
    assert "srun --mpi=" in survey.replace('srun "${srun_args[@]}"', "srun --mpi=") and "pmi2" in survey
    assert "--dependency=" in survey and "afterok:" in survey


FAKE_APPTAINER = """#!/bin/bash
# Stand-in for apptainer (not installable here): checks the binds, records argv and environment,
# then runs the command on the host as `apptainer exec` would inside the image.
echo "$*" >>"$FAKE_LOG"
[[ $1 == exec ]] || exit 64
shift
binds=
while [[ $1 == -* ]]; do
    case $1 in --bind|-B) binds=$2; shift 2 ;; *) echo "unexpected option $1" >&2; exit 64 ;; esac
done
image=$1
shift
IFS=, read -r -a list <<<"$binds"
for b in "${list[@]}"; do [[ -e ${b%%:*} ]] || { echo "bind source missing: $b" >&2; exit 65; }; done
export APPTAINER_CONTAINER=$image
env >"$FAKE_ENV"
exec "$@"
"""


def test_image_launcher_binds_the_config_paths_and_keeps_slurm_env(slurm_config: Path, tmp_path: Path) -> None:
    """With DREAM_IMAGE set, dream-hpc runs through `apptainer exec` with every path the config names
    bound, SLURM_* passed through, and the host's PYTHONPATH dropped."""
    shim = tmp_path / "bin" / "apptainer"
    shim.parent.mkdir()
    shim.write_text(FAKE_APPTAINER)
    shim.chmod(0o755)
    image = tmp_path / "dream-hpc.sif"
    image.write_bytes(b"not really an image")
    run = tmp_path / "run"
    env = {"PATH": f"{shim.parent}:{VENV / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path),
           "FAKE_LOG": str(tmp_path / "argv.log"), "FAKE_ENV": str(tmp_path / "env.log"),
           "DREAM_CONFIG": str(slurm_config), "DREAM_RUN": str(run), "DREAM_IMAGE": str(image),
           "DREAM_BINDS": "/tmp", "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "node[01-04]",
           "PYTHONPATH": "/somewhere/else"}
    script = f'source {SLURM / "common.sh"}; dream_inputs; dream_launcher; "${{DREAM_LAUNCH[@]}}" versions'
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "jwst" in done.stdout  # `dream-hpc versions` really ran through the launcher
    calls = (tmp_path / "argv.log").read_text().splitlines()
    assert len(calls) == 2 and "slurm binds" in calls[0] and calls[1].endswith(f"{image} dream-hpc versions")
    binds = calls[1].split("--bind ", 1)[1].split()[0].split(",")
    kit = Path(yaml.safe_load(slurm_config.read_text())["references"]["crds_path"]).parent
    for path in (run, slurm_config.parent, kit / "crds_cache", kit / "mirage_data", kit / "manifest.json"):
        assert str(path.resolve()) in binds, f"{path} not bound: {binds}"
    assert binds[-1] == "/tmp"  # DREAM_BINDS appended
    inside = dict(ln.split("=", 1) for ln in (tmp_path / "env.log").read_text().splitlines() if "=" in ln)
    assert inside["SLURM_JOB_ID"] == "4242" and inside["SLURM_JOB_NODELIST"] == "node[01-04]"
    assert inside["APPTAINER_CONTAINER"] == str(image) and "PYTHONPATH" not in inside


# --- a real Slurm --------------------------------------------------------------------------------
@pytest.mark.slurm
@pytest.mark.slow
def test_sbatch_accepts_the_directives(local_slurm) -> None:
    """Real sbatch parses every #SBATCH line (with this one small node's resources overridden)."""
    for script, resources in (("full_survey.sh", ["--nodes=1", "--ntasks-per-node=2", "--mem-per-cpu=1G"]),
                              ("image3.sh", ["--mem=1G"])):
        done = local_slurm.run("sbatch", "--test-only", *resources, str(SLURM / script))
        assert done.returncode == 0 and "to start at" in done.stderr, done.stderr


@pytest.mark.slurm
@pytest.mark.slow
def test_survey_through_slurm(local_slurm, slurm_survey: Submission) -> None:
    sub = slurm_survey
    assert sub.states == {sub.survey_job: "COMPLETED", sub.image3_job: "COMPLETED"}, (
        f"{sub.states}\n--- survey job log ---\n{sub.log(sub.survey_job)}\n"
        f"--- image3 job log ---\n{sub.log(sub.image3_job, 'dream-image3')}")
    assert local_slurm.job(sub.image3_job)["NumTasks"] == "2"
    assert_each_unit_done_once(sub.run)
    assert_mosaic_and_audit(sub.run)
    # The ranks were started by srun with PMI-2 and the run records the Slurm job (provenance).
    # Two attempts are recorded: the units job, then the Image3 job's `dream-hpc mosaic` (one task).
    starts = sorted((r for r in journal_records(sub.run) if r["kind"] == "run_start"), key=lambda r: r["time"])
    assert len(starts) == 2
    facts = starts[0]["data"]
    assert facts["mpi_size"] == 2 and facts.get("launcher") == "srun"
    assert facts["slurm"]["job_id"] == sub.survey_job and facts["slurm"]["nodelist"]
    assert starts[1]["data"]["mpi_size"] == 2 and starts[1]["data"]["slurm"]["job_id"] == sub.image3_job  # the tiles run on both ranks
    assert {r["rank"] for r in journal_records(sub.run) if r["kind"] == "unit_done"} <= {0, 1}
    assert "audit" in sub.log(sub.image3_job, "dream-image3")


@pytest.mark.slurm
@pytest.mark.slow
def test_cancel_then_resubmit_resumes(local_slurm, slurm_config: Path, tmp_path: Path) -> None:
    first = submit(local_slurm, slurm_config, tmp_path / "run", tmp_path)
    local_slurm.wait_for(lambda: units_done(first.run), JOB_TIMEOUT_S, "a first finished unit",
                         job=first.survey_job)
    assert local_slurm.run("scancel", first.survey_job).returncode == 0
    local_slurm.wait([first.survey_job], 120)
    # Its Image3 job can never start now: Slurm cancels it (--kill-on-invalid-dep).
    assert local_slurm.wait([first.image3_job], 120)[first.image3_job] == "CANCELLED"
    before = units_done(first.run)
    assert 1 <= len(before) < 4, f"cancel came too late to test resume: {before}"
    resubmitted_at = datetime.datetime.now(datetime.UTC)

    second = submit(local_slurm, slurm_config, first.run, tmp_path)
    states = local_slurm.wait([second.survey_job, second.image3_job], JOB_TIMEOUT_S)
    assert set(states.values()) == {"COMPLETED"}, f"{states}\n{second.log(second.survey_job)}"
    assert_each_unit_done_once(first.run)
    # Units finished before the cancel were not started again by the resubmitted job.
    later = [r for r in journal_records(first.run)
             if r["kind"] == "unit_start" and datetime.datetime.fromisoformat(r["time"]) >= resubmitted_at]
    assert later and not {r["unit"] for r in later} & before
    assert_mosaic_and_audit(first.run)


@pytest.mark.slurm
@pytest.mark.slow
def test_time_limit_warning_requeues_and_resumes(local_slurm, slurm_config: Path, tmp_path: Path) -> None:
    # The warning normally comes --signal seconds before the limit; sending it by hand is the same
    # signal to the same process. DREAM_MIN_ATTEMPT_S=0: the guard against a too-short --time is off.
    sub = submit(local_slurm, slurm_config, tmp_path / "run", tmp_path, DREAM_MIN_ATTEMPT_S="0")
    local_slurm.wait_for(lambda: units_done(sub.run), JOB_TIMEOUT_S, "a first finished unit",
                         job=sub.survey_job)
    assert local_slurm.run("scancel", "--batch", "--signal=USR1", sub.survey_job).returncode == 0
    states = local_slurm.wait([sub.survey_job, sub.image3_job], JOB_TIMEOUT_S)
    log = sub.log(sub.survey_job)
    assert set(states.values()) == {"COMPLETED"}, f"{states}\n{log}"
    assert int(local_slurm.job(sub.survey_job)["Restarts"]) == 1, log
    assert "requeueing job" in log and "sending TERM" not in log, "the ranks should stop on their own (RUN/STOP)"
    assert not (sub.run / "STOP").exists(), "the requeued job must clear its own stop request"
    assert_each_unit_done_once(sub.run)
    starts = [r["data"] for r in journal_records(sub.run) if r["kind"] == "run_start"]
    # the first attempt, the requeued one, then the Image3 job's `dream-hpc mosaic`
    assert [s["slurm"]["job_id"] for s in starts].count(sub.survey_job) == 2 and len(starts) == 3
    assert_mosaic_and_audit(sub.run)


FAKE_ENGINE = """#!/bin/bash
# Stand-in for dream-hpc: `run` ends as FAKE_OUTCOME says; the Image3 job's commands leave marks.
cmd=$1
shift
case $cmd in
    run)
        out=$3
        mkdir -p "$out/journal"
        [[ ${PMI_RANK:-0} == 0 ]] || exit 0
        if [[ $FAKE_OUTCOME == failed-units ]]; then
            echo '{"kind":"run_end","data":{"status":"failed"}}' >"$out/journal/rank00000-1-1.jsonl"
        else
            echo '{"kind":"run_start"}' >"$out/journal/rank00000-1-1.jsonl"  # crashed: no run_end
        fi
        exit 1 ;;
    mosaic) touch "$3/mosaic-ran" ;;
    provenance | audit) touch "$1/$cmd-ran" ;;
esac
"""


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize("outcome", ["failed-units", "crash"])
def test_failed_units_hand_over_but_a_crash_does_not(local_slurm, outcome: str, tmp_path: Path) -> None:
    """One bad exposure never stops a survey: a pass that ended with failed units still lets the
    Image3 job start (mosaic decides by engine.allow_partial_mosaic); an engine crash does not."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "dream-hpc"
    fake.write_text(FAKE_ENGINE)
    fake.chmod(0o755)
    config = tmp_path / "survey.yaml"
    config.write_text("survey: {}\n")
    sub = submit(local_slurm, config, tmp_path / "run", tmp_path, DREAM_VENV=str(venv), FAKE_OUTCOME=outcome)
    states = local_slurm.wait([sub.survey_job, sub.image3_job], 300)
    if outcome == "failed-units":
        assert states == {sub.survey_job: "COMPLETED", sub.image3_job: "COMPLETED"}, sub.log(sub.survey_job)
        assert "some units failed" in sub.log(sub.survey_job)
        assert all((sub.run / f"{c}-ran").exists() for c in ("mosaic", "provenance", "audit"))
    else:
        assert states == {sub.survey_job: "FAILED", sub.image3_job: "CANCELLED"}, sub.log(sub.survey_job)
        assert "without finishing its pass" in sub.log(sub.survey_job)
        assert not (sub.run / "mosaic-ran").exists()


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.mpi
def test_slurm_and_mpiexec_runs_are_bit_identical(slurm_survey: Submission, slurm_config: Path,
                                                   tmp_path: Path) -> None:
    """Reproducing a run elsewhere: the same config under mpiexec -n 2, in another directory."""
    other = tmp_path / "mpiexec-run"
    env = {**os.environ, "PATH": f"{VENV / 'bin'}:{os.environ['PATH']}"}
    for var in [v for v in env if v.startswith(("SLURM_", "PMI_"))]:
        env.pop(var)
    done = subprocess.run(["mpiexec", "-n", "2", "dream-hpc", "run", str(slurm_config), "--out", str(other)],
                          env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    for cmd in (["provenance", str(other)], ["compare", str(slurm_survey.run), str(other)]):
        res = subprocess.run([sys.executable, "-m", "dream_hpc", *cmd], capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, f"dream-hpc {' '.join(cmd)}:\n{res.stdout}\n{res.stderr}"
    out = res.stdout
    assert "REPRODUCED: every science array bit-identical" in out, out
    compared = re.search(r"^products\s+(\d+) compared: (\d+) identical$", out, flags=re.M)
    assert compared and compared.group(1) == compared.group(2) and int(compared.group(1)) >= 4 * 3 + 1, out
    for section in ("references", "inputs", "parameters", "seeds", "units"):
        assert re.search(rf"^{section}\s+identical", out, flags=re.M), out
    # Same packages; only dream-hpc's own commit may differ (a shared checkout can move between the runs).
    software = re.search(r"^software\s+(.*?)\n(?=references)", out, flags=re.M | re.S).group(1)
    assert software.startswith("identical") or all(
        ln.strip().startswith("dream-hpc commit") for ln in software.splitlines()[1:]), out
