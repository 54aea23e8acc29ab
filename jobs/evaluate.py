r"""Ray job: Evaluate a model file or a registered model (resolution@champion).

    ray job submit --runtime-env jobs/runtime_env.yaml -- \
        python jobs/evaluate.py MODEL --data DATA

Arguments are those of `xrp evaluate --help`; see jobs/README.md."""

from _entry import run

if __name__ == "__main__":
    run(["evaluate"])
