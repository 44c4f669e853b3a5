# shellcheck shell=bash
# Functions shared by deploy/run and deploy/test. Source it from a script running under `set -Eeuo pipefail`.

OTAHUB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BINDIR=${OTAHUB_PG_BINDIR:-/usr/lib/postgresql/15/bin}

say() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

is_root() { [[ $EUID -eq 0 ]]; }

as_root() {
    if is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "root is needed for: $*  (run as root or install sudo)"
    fi
}

wanted_packages() {
    sed -e 's/#.*//' -e 's/[[:space:]]//g' "$OTAHUB_ROOT/deploy/packages.txt" | grep -v '^$'
}

# Packages from deploy/packages.txt that dpkg does not report as installed. nodejs and npm count only
# when there is no `node` on PATH (a Node from elsewhere ships its own npm and conflicts with Debian's).
missing_packages() {
    local pkg
    while read -r pkg; do
        case $pkg in
            nodejs | npm) command -v node >/dev/null 2>&1 && continue ;;
        esac
        [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null) == ii* ]] || printf '%s\n' "$pkg"
    done < <(wanted_packages)
}

ensure_packages() {
    command -v dpkg-query >/dev/null 2>&1 ||
        die "dpkg-query not found: this is meant for Debian 12; install the packages in deploy/packages.txt yourself"
    local missing
    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]} == 0)); then
        say "Debian packages: all of deploy/packages.txt are installed"
        return 0
    fi
    local how="apt-get"
    is_root || how="sudo apt-get"
    say "Installing missing Debian packages with $how: ${missing[*]}"
    if dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' 'libboost1.74*-dev' 2>/dev/null | grep -q '^ii'; then
        warn "Boost 1.74 development packages are installed; apt-get will remove them (only one Boost -dev can be installed)"
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    mapfile -t missing < <(missing_packages)
    ((${#missing[@]} == 0)) || die "still not installed after apt-get: ${missing[*]}"
}

build_jobs() { printf '%s\n' "${OTAHUB_BUILD_JOBS:-$(nproc)}"; }

# usage: cmake_build DIR [cmake -D options...]   (Ninja for a new build directory)
cmake_build() {
    local dir=$1
    shift
    local generator=()
    [[ -f $dir/CMakeCache.txt ]] || generator=(-G Ninja)
    cmake -S "$OTAHUB_ROOT" -B "$dir" "${generator[@]}" "$@"
    cmake --build "$dir" --parallel "$(build_jobs)"
}

# Runs a command as the owner of the throwaway PostgreSQL cluster: `postgres` when root (initdb refuses
# root), otherwise the current user.
as_pg_owner() {
    if is_root; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Gives a directory to the cluster owner and checks that the owner can reach it.
pg_prepare_dir() {
    mkdir -p "$1"
    if is_root; then
        chown postgres: "$1"
        runuser -u postgres -- test -w "$1" ||
            die "the postgres user cannot write $1 (a parent directory is closed to it); move the repository under a directory other users can enter"
    fi
}

pg_check_binaries() {
    [[ -x $PG_BINDIR/initdb && -x $PG_BINDIR/pg_ctl ]] ||
        die "PostgreSQL 15 server binaries not found in $PG_BINDIR (package postgresql-15)"
}

# usage: pg_init DATADIR
pg_init() {
    pg_check_binaries
    local log
    log=$(dirname "$1")/initdb.log
    (cd / && as_pg_owner "$PG_BINDIR/initdb" -D "$1" -U postgres -A trust --no-sync -E UTF8 --locale=C) \
        >"$log" 2>&1 || {
        cat "$log" >&2
        die "initdb failed for $1"
    }
}

pg_running() { (cd / && as_pg_owner "$PG_BINDIR/pg_ctl" -D "$1" status) >/dev/null 2>&1; }

# usage: pg_start DATADIR SOCKETDIR PORT LOGFILE [postgres -c settings...]
pg_start() {
    pg_check_binaries
    local data=$1 sockets=$2 port=$3 log=$4
    shift 4
    local opts
    printf -v opts '%q ' -k "$sockets" -p "$port" -c listen_addresses=127.0.0.1 "$@"
    (cd / && as_pg_owner "$PG_BINDIR/pg_ctl" -D "$data" -l "$log" -w -t 60 -o "$opts" start) >/dev/null
}

# usage: pg_stop DATADIR [fast|immediate]
pg_stop() {
    pg_running "$1" || return 0
    (cd / && as_pg_owner "$PG_BINDIR/pg_ctl" -D "$1" -m "${2:-fast}" -w -t 60 stop) >/dev/null
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A TCP port on 127.0.0.1 that nothing listens on now, below the ephemeral range.
free_port() {
    local port _
    for _ in $(seq 50); do
        port=$((15000 + RANDOM % 17000))
        port_in_use "$port" || {
            printf '%s\n' "$port"
            return 0
        }
    done
    die "no free TCP port found"
}

# usage: pg_psql PORT DATABASE [psql args...]
pg_psql() {
    local port=$1 db=$2
    shift 2
    psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d "$db" "$@"
}

# Phase timing. phase_begin NAME closes the previous phase as ok; phase_end closes the current one;
# phase_fail (from an EXIT trap) marks an unfinished phase FAILED.
PHASE_NAMES=()
PHASE_SECONDS=()
PHASE_RESULTS=()
phase_current=""
phase_started=0

phase_end() {
    [[ -n $phase_current ]] || return 0
    PHASE_NAMES+=("$phase_current")
    PHASE_SECONDS+=($((SECONDS - phase_started)))
    PHASE_RESULTS+=("${1:-ok}")
    phase_current=""
}

phase_begin() {
    phase_end
    phase_current=$1
    phase_started=$SECONDS
    say "$1"
}

phase_fail() { phase_end FAILED; }

format_seconds() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

print_phases() {
    local i total=0
    printf '\n%-34s %9s  %s\n' "phase" "time" "result"
    for i in "${!PHASE_NAMES[@]}"; do
        printf '%-34s %9s  %s\n' "${PHASE_NAMES[$i]}" "$(format_seconds "${PHASE_SECONDS[$i]}")" "${PHASE_RESULTS[$i]}"
        total=$((total + PHASE_SECONDS[i]))
    done
    printf '%-34s %9s\n' "total" "$(format_seconds "$total")"
}
