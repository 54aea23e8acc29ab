r"""Ray job: Simulate a shot data set (HDF5 shards), one Ray task per shard.

    ray job submit --runtime-env jobs/runtime_env.yaml -- \
        python jobs/simulate.py PRESET --out DIR [-n N]

Arguments are those of `xrp simulate --help`; see jobs/README.md."""

from _entry import run

if __name__ == "__main__":
    run(["simulate"])
