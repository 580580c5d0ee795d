#!/usr/bin/env bash
# Issue 15's GPU checks as one prepared script: a session lent a GPU is rare and has 15 minutes of
# device time, machine starts and file transfers included, so nothing is typed there.
#
# The GPU image has jax, flax, optax, orbax and PyTorch but not TensorFlow, TFDS, ml_collections
# or dm-pix (with chex and toolz), and nothing can be downloaded there. So, here (pip's registry
# reachable; about 3-4 minutes, most of it xz):
#
#   bash experiments/gpu_check.sh pack        # .gpu/1 .. .gpu/N, each under 55 MiB (git-ignored)
#
# then, with the device tool, one `run` per part while the machine stays warm (30 s idle: make
# the calls back to back; if it went back between them, the benches still run, with the
# ml_collections and dm-pix that travel in the last part; only the steps that need TensorFlow
# fail):
#
#   carry [".gpu/K"]: bash experiments/gpu_check.sh stage .gpu/K             (K = 1 .. N-1)
#   carry [".gpu/N"]: bash experiments/gpu_check.sh stage .gpu/N && bash experiments/gpu_check.sh run "$OUT" 540
#   (the last with timeout_s 600; then give the machine back)
#
# `run OUT SECONDS` unpacks the staged parts, then measures in order of priority, each step cut
# to the time left, and leaves at most 8 files in OUT (the device tool brings back no more):
#   env.txt               GPU, driver, versions
#   log.txt               everything the steps printed, with each step's time and exit status
#   bench_target.json     the issue's target: torchvision224 train, bfloat16, batch 256, against
#                         PyTorch eager (autocast) and torch.compile, two rounds
#   train_metrics.jsonl   200 steps of configs/imagenet.py:torchvision on generated JPEGs
#                         through TFDS and tf.data (its progress lines are in log.txt)
#   pipeline.json         the input pipeline alone, all host cores and one
#   bench_float32.json    float32 train at batch 256 (both peers), bfloat16 eval at 256
#   bench_batches.json    bfloat16 train at batches 128 and 64 against PyTorch eager
# Render a bench file here with:
#   python -c "import json,sys; from inception_jax.bench.run import markdown; print(markdown(json.load(open(sys.argv[1]))))" F
#
# `run OUT SECONDS --tiny` runs the same steps on small cases, on any machine with the project
# installed: a try of the script, and of a pack in a Python like the image's, before a session.
# Like the image's: Python 3.12 (pyenv's 3.12.1 here) with the image's packages that TensorFlow
# and TFDS import, and no TensorFlow of its own, so that the pack's is the one tried (passed
# 2026-12-05 with jax 0.12.0.1, every step):
#   V=/tmp/venv312 && ~/.pyenv/versions/3.12.1/bin/python -m venv $V && $V/bin/pip install jax \
#     flax optax orbax-checkpoint scipy matplotlib scikit-learn tensorboard safetensors protobuf \
#     pillow wrapt six flatbuffers grpcio h5py ml-dtypes opt-einsum requests etils psutil \
#     pyarrow tqdm absl-py
#   for k in 1 2 3; do GPU_CHECK_PARTS=/tmp/parts bash experiments/gpu_check.sh stage .gpu/$k; done
#   PYTHON=$V/bin/python GPU_CHECK_PARTS=/tmp/parts bash experiments/gpu_check.sh run /tmp/o 400 --tiny
# `commands [--tiny]` prints the commands `run` would time, which tests/test_gpu_check.py checks
# against the CLI and the configs: they stay valid as those move.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SITE=${GPU_CHECK_SITE:-/tmp/inception-jax-site}
PARTS=${GPU_CHECK_PARTS:-/tmp/inception-jax-parts}
PYTHON=${PYTHON:-python3}
# What the GPU image lacks for `train` (TensorFlow and TFDS with the dependencies they import) and
# for every command (ml_collections; dm-pix, which the train step imports, with chex and toolz).
# libclang and keras are left out: TensorFlow's import needs neither (the command keeps Keras out
# of it, see launch.py).
WHEELS=(
  tensorflow-cpu==2.21.0 tensorflow-datasets==4.9.10 ml_collections==1.1.0 astunparse gast
  google_pasta termcolor array_record dm-tree immutabledict simple_parsing docstring_parser
  tensorflow-metadata googleapis-common-protos toml importlib_resources dm-pix==0.4.5
  chex toolz
)
SOURCE_ONLY=(promise)  # no wheel on PyPI: built here (pure Python)
DEVICE_PYTHON=3.12     # the image's python3 (/work/.library/device/KINDS.md)

pack() {
  local dest=$ROOT/.gpu work
  work=$(mktemp -d)
  "$PYTHON" -m pip wheel --quiet --no-deps -w "$work/wheels" "${SOURCE_ONLY[@]}" || return 1
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$DEVICE_PYTHON" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$work/wheels" \
    "${WHEELS[@]}" || return 1
  mkdir -p "$work/site"
  for wheel in "$work"/wheels/*.whl; do unzip -q -o "$wheel" -d "$work/site"; done
  rm -rf "$work/site/tensorflow/include"  # C++ headers: a fifth of TensorFlow's wheel
  # ml_collections and dm-pix apart, with the last part: with them alone the benches run (no
  # TensorFlow), if the machine went back between the staging calls and took the earlier parts
  mkdir -p "$work/base"
  mv "$work/site"/{ml_collections,dm_pix,chex,toolz,tlz}* "$work/base/"
  rm -rf "$dest" && mkdir -p "$dest"
  tar -C "$work/site" -cf - . | xz -T0 -6 | split -b 55M -d -a 1 - "$work/part-"
  local k=1
  for part in "$work"/part-*; do mkdir -p "$dest/$k" && mv "$part" "$dest/$k/"; k=$((k + 1)); done
  tar -C "$work/base" -cf - . | xz -6 >"$dest/$((k - 1))/base.tar.xz"
  rm -rf "$work"
  echo "packed into $(ls "$dest" | wc -l) parts under $dest:"
  du -sh "$dest"/*
}

stage() {
  mkdir -p "$PARTS" && cp "$1"/* "$PARTS"/ && ls -l "$PARTS"
}

# xz, or Python's lzma where the image has no xz
unxz() {
  if command -v xz >/dev/null; then
    xz -d
  else
    "$PYTHON" -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer)"
  fi
}

OUT= DEADLINE=0 PRINT_ONLY=0
log() { echo "$*" | tee -a "$OUT/log.txt"; }

# step NAME CAP_SECONDS COMMAND...: runs COMMAND for at most CAP seconds and the time left
step() {
  local name=$1 cap=$2 left start status
  shift 2
  if ((PRINT_ONLY)); then
    echo "${@@Q}"
    return
  fi
  left=$((DEADLINE - $(date +%s)))
  if ((left < 30)); then
    log "== $name: skipped, ${left}s left"
    return
  fi
  ((cap > left)) && cap=$left
  log "== $name (at most ${cap}s): $*"
  start=$(date +%s)
  timeout --signal=INT --kill-after=20 "$cap" "$@" 2>&1 | grep --line-buffered -v "Delay kernel timed out" | tee -a "$OUT/log.txt"
  status=${PIPESTATUS[0]}
  log "== $name: exit $status after $(($(date +%s) - start))s"
}

# measure WORK [--tiny]: the measurements, in order of priority, their files under WORK
measure() {
  local work=$1 cli=("$PYTHON" -m inception_jax.main)
  local net=torchvision224 big=256 mid=128,64 steps=(--steps 20 --warmup 3) variants=eager,compile
  local data=synthetic_jpegs/small train_steps=200 every=100 train_size=() threads=0,1 seconds=8
  if [[ ${2:-} == --tiny ]]; then
    net=tiny16 big=4 mid=2 steps=(--steps 1 --warmup 1) variants=eager
    data=synthetic_jpegs/tiny train_steps=2 every=1 threads=1 seconds=1
    train_size=(--config.image_size=32 --config.model.dtype=float32 --config.batch_size=8)
  fi
  step target 300 "${cli[@]}" bench --networks $net --dtypes bfloat16 --batch-sizes $big \
    --modes train --torch-variants $variants "${steps[@]}" --rounds 2 --pipeline-threads= \
    --out "$work/bench_target"
  step train 200 "${cli[@]}" train --config configs/imagenet.py:torchvision \
    --config.data.name=$data --config.data.dir="$work/tfds" --config.num_train_steps=$train_steps \
    --config.log_every_steps=20 --config.eval_every_steps=$every \
    --config.checkpoint_every_steps=$every "${train_size[@]}" --workdir "$work/train"
  step pipeline 60 "${cli[@]}" bench --modes= --pipeline-threads $threads \
    --pipeline-seconds $seconds --out "$work/pipeline"
  step float32 240 "${cli[@]}" bench --networks $net --dtypes float32 --batch-sizes $big \
    --modes train --torch-variants $variants "${steps[@]}" --pipeline-threads= \
    --out "$work/bench_float32"
  step eval 120 "${cli[@]}" bench --networks $net --dtypes bfloat16 --batch-sizes $big \
    --modes eval --torch-variants eager "${steps[@]}" --pipeline-threads= \
    --out "$work/bench_eval"
  step batches 300 "${cli[@]}" bench --networks $net --dtypes bfloat16 --batch-sizes $mid \
    --modes train --torch-variants eager "${steps[@]}" --pipeline-threads= \
    --out "$work/bench_batches"
}

run() {
  OUT=$1
  DEADLINE=$(($(date +%s) + $2))
  mkdir -p "$OUT" && : >"$OUT/log.txt"
  local work
  work=$(mktemp -d)
  mkdir -p "$SITE"
  if [[ -f $PARTS/base.tar.xz ]]; then
    unxz <"$PARTS/base.tar.xz" | tar -C "$SITE" -xf - || log "unpacking base.tar.xz failed"
  fi
  if compgen -G "$PARTS/part-*" >/dev/null; then
    cat "$PARTS"/part-* | unxz | tar -C "$SITE" -xf - ||
      log "unpacking the parts failed (one missing?): train and the pipeline need TensorFlow"
  fi
  export PYTHONPATH=$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}
  export PYTHONUNBUFFERED=1 TFDS_DATA_DIR=$work/tfds JAX_COMPILATION_CACHE_DIR=$work/jax-cache
  {
    date -u
    nvidia-smi 2>&1 || echo "no nvidia-smi"
    lscpu 2>&1 | grep -E "Model name|^CPU\(s\)"
    "$PYTHON" -c "
import importlib.metadata as m, jax
print('jax devices:', jax.devices())
for name in ('jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'torch', 'torchvision',
             'tensorflow-cpu', 'tensorflow-datasets', 'ml_collections', 'dm-pix', 'chex', 'numpy',
             'protobuf'):
  try: print(name, m.version(name))
  except m.PackageNotFoundError: print(name, 'not installed')
" 2>&1
  } >"$OUT/env.txt"
  cat "$OUT/env.txt" >>"$OUT/log.txt"

  cd "$ROOT" || return 1
  measure "$work" "${3:-}"

  cp "$work/bench_target/bench.json" "$OUT/bench_target.json" 2>/dev/null
  cp "$work/train/metrics.jsonl" "$OUT/train_metrics.jsonl" 2>/dev/null
  cp "$work/pipeline/bench.json" "$OUT/pipeline.json" 2>/dev/null
  # the float32 and eval rows in one file: the device tool brings back 8 files at most
  "$PYTHON" - "$work" "$OUT/bench_float32.json" <<'EOF'
import json, pathlib, sys
work, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
parts = [json.loads(p.read_text()) for p in (work / "bench_float32" / "bench.json",
         work / "bench_eval" / "bench.json") if p.exists()]
if parts:
  merged = parts[0]
  for part in parts[1:]:
    merged["rows"] += part["rows"]
    merged["command"] += "\n" + part["command"]
  out.write_text(json.dumps(merged, indent=2) + "\n")
EOF
  cp "$work/bench_batches/bench.json" "$OUT/bench_batches.json" 2>/dev/null
  rm -rf "$work"
  log "== done; in $OUT: $(ls "$OUT" | tr '\n' ' ')"
}

case ${1:-} in
  pack) pack ;;
  stage) stage "$2" ;;
  run) run "$2" "$3" "${4:-}" ;;
  commands) PRINT_ONLY=1 measure WORK "${2:-}" ;;
  *) sed -n '/^set -uo/q;2,$p' "$0" && exit 2 ;;
esac
