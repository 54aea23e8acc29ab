r"""Ray job: Tune the resolution regressor; register the champion.

    ray job submit --runtime-env jobs/runtime_env.yaml -- \
        python jobs/tune_resolution.py [--preset quick|full] [...]

Arguments are those of `xrp tune resolution --help`; see jobs/README.md."""

from _entry import run

if __name__ == "__main__":
    run(["tune", "resolution"])
