#!/usr/bin/env bash
# Device figures and a zoo lattice model from ONE call of the device tool (a GPU machine with
# torch but no Ray, MLflow, fabio or hdf5plugin; at most 9 minutes a call). A session lent one:
#
#   run(command="bash benchmarks/device.sh", timeout_s=560)
#
# 1. benchmarks/device_figures.py (<= ~2.5 min): simulator shots/s (fast path, full frames) and
#    the frame -> answer path (frames/s, p50/p99 ms, peak GPU memory) at PILATUS 6M and EIGER
#    16M sizes with the zoo models on the GPU -> $OUT/device.json
# 2. jobs/zoo_gpu.py lattice on what is left (~5 min of training; every core but one
#    simulates) -> $OUT/model.pt.part*, history.json, summary.json, train.log
# 3. the training figures added to device.json (a failed step: its error under "failed").
#
# Everything ends by a deadline XRP_DEVICE_BUDGET_S (525) seconds after the start, whatever
# the start-up costs: training gets the time the measuring left. With less device time left,
# shorten it: run(command="XRP_DEVICE_BUDGET_S=300 bash benchmarks/device.sh", timeout_s=330).
# Back here, with the returned files (files_at):
#   cat model.pt.part* > model.pt
#   xrp evaluate model.pt --data data/zoo-lattice-uniform-test    # and the -g1/-g5/-g20 sets;
#   xrp evaluate zoo:lattice --data data/zoo-lattice-uniform-test # the zoo model, same sets
# and ship it (python -m xray_platform.zoo.export lattice model.pt ...) only if it beats the
# zoo model; quote device.json's figures with its "device". A CPU dry run (tests/unit/
# test_device_script.py): OUT=/tmp/d XRP_DEVICE=cpu XRP_DEVICE_TINY=1
# XRP_DEVICE_TRAIN_MINUTES=0.1 PYTHON=.venv/bin/python bash benchmarks/device.sh
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
: "${OUT:?OUT: the folder whose files come back}"
mkdir -p "$OUT"
PY=${PYTHON:-python3}
DEVICE=${XRP_DEVICE:-cuda}
TRAIN_MIN=${XRP_DEVICE_TRAIN_MINUTES:-5}
MEASURE_S=${XRP_DEVICE_MEASURE_S:-150}
DEADLINE=$(( $(date +%s) + ${XRP_DEVICE_BUDGET_S:-525} ))
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
until_s() { local s=$(( $1 - $(date +%s) )); echo $(( s > 1 ? s : 1 )); }  # timeout 0: none

FIG=(--device "$DEVICE")
TRAIN=(--workers "$(( $(nproc) > 1 ? $(nproc) - 1 : 1 ))")
if [ "${XRP_DEVICE_TINY:-0}" = 1 ]; then
  FIG+=(--tiny)
  TRAIN=(--workers 1 --n-val 8 --chunk 4 --min-start 2 --val-every-s 3 --batch-size 4)
fi

# 1. the figures: MEASURE_S at most, and never past the time training needs (>= 60 s + 20 s)
m_end=$(( $(date +%s) + MEASURE_S )); m_end=$(( m_end < DEADLINE - 80 ? m_end : DEADLINE - 80 ))
echo "[device] measuring until $(( m_end - $(date +%s) )) s from now"
timeout -k 5 "$(until_s $(( m_end + 20 )))" "$PY" benchmarks/device_figures.py "${FIG[@]}" \
  --deadline "$m_end" --out "$OUT/device.json" > "$OUT/figures.log" 2>&1
echo "[device] figures exit $?"

# 2. training: what is left, less 15 s for step 3 (zoo_gpu.py shortens its own training)
t_end=$(( DEADLINE - 15 ))
echo "[device] training until $(( t_end - $(date +%s) )) s from now (at most $TRAIN_MIN min)"
timeout -k 5 "$(until_s $(( t_end + 5 )))" "$PY" jobs/zoo_gpu.py lattice --out "$OUT" \
  --device "$DEVICE" --minutes "$TRAIN_MIN" --deadline "$t_end" "${TRAIN[@]}" \
  > "$OUT/train.log" 2>&1
rc=$?
echo "[device] training exit $rc"
rm -f "$OUT/model.pt" "$OUT/device.json.tmp"  # the parts carry it (files of <= 16 MiB)

# 3. the training figures; every returned file within 16 MiB
s=$(until_s $(( DEADLINE + 5 ))); s=$(( s > 10 ? s : 10 ))
timeout -k 2 "$s" "$PY" benchmarks/device_figures.py \
  --training "$OUT" --training-rc "$rc" --out "$OUT/device.json"
for f in "$OUT"/*.log; do
  if [ "$(stat -c %s "$f")" -gt 4000000 ]; then tail -c 4000000 "$f" > "$f.t" && mv "$f.t" "$f"; fi
done
tail -n 3 "$OUT/train.log"
ls -l "$OUT"
