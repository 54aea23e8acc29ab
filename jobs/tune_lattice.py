r"""Ray job: Tune the lattice classifier; register the champion.

    ray job submit --runtime-env jobs/runtime_env.yaml -- \
        python jobs/tune_lattice.py [--preset quick|full] [...]

Arguments are those of `xrp tune lattice --help`; see jobs/README.md."""

from _entry import run

if __name__ == "__main__":
    run(["tune", "lattice"])
