#!/bin/bash
# bench/fio.sh - compares a 1-host sheepfs volume with a plain local file, in one run.
#
# Usage (as root, from anywhere in the repository):
#   bench/fio.sh [--passthrough] [--dbench] [--no-copy]
#
# What it does:
#   * starts `target/release/sheepfs MNT --store … --admin-socket … --no-mdns` in a scratch
#     directory (built with `cargo build --release --bins` if missing) and removes everything it
#     made on exit (trap: daemon stopped by PID, mounts and loop devices released);
#   * runs the same fio jobs on a SIZE plain local file and on a SIZE sheepfs volume, all with
#     ioengine=libaio direct=1 (what QEMU cache=none does), after filling both with data once:
#       seq-write  1M iodepth 8     seq-read  1M iodepth 8
#       rand-write 4k iodepth 32    rand-read 4k iodepth 32
#       sync-write 4k iodepth 1, sequential, fsync=1 (IOPS, p50 write and fsync latency)
#   * prints one markdown table, job | local | sheepfs | ratio (sheepfs / local), then the
#     daemon's peak RSS (VmHWM) and the time of a whole-volume copy_file_range (`xfs_io
#     copy_range`) of a COPY_SIZE volume that holds COPY_DATA of data (COW: should be instant).
#   * --passthrough adds a column for a pass-through FUSE mount of the local file (bindfs,
#     `apt-get install bindfs`), which separates FUSE's own cost from sheepfs's.
#   * --dbench adds `dbench -s -S -t DBENCH_TIME 4` on ext4 over a loop device, on the sheepfs
#     volume and on the local file.
#   * --no-copy skips the copy_file_range measurement.
#
# Environment (defaults in brackets):
#   RUNTIME [20]  seconds per fio job      SIZE [2G]         volume/file size of the fio jobs
#   COPY_SIZE [10G] COPY_DATA [1G]          DBENCH_TIME [30]  DBENCH_SIZE [4G]
#   SHEEPFS [target/release/sheepfs]        WORKDIR [a new dir under /var/tmp] (on a local fs)
#   JOBS ["seq-write seq-read rand-write rand-read sync-write"]
#   KEEP_JSON=DIR  keeps fio's JSON output in DIR.
#   MOUNT=DIR  use the sheepfs already mounted on DIR (e.g. host 0 of a 3-host cluster started
#              by `cargo bench -p sheep-tests --bench cluster -- fio`) instead of starting one.
# Needs: fio, jq, xfs_io (xfsprogs), e2fsprogs + dbench for --dbench, bindfs for --passthrough
# (`scripts/install-deps.sh --bench` installs them all).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
RUNTIME=${RUNTIME:-20}
SIZE=${SIZE:-2G}
COPY_SIZE=${COPY_SIZE:-10G}
COPY_DATA=${COPY_DATA:-1G}
DBENCH_TIME=${DBENCH_TIME:-30}
DBENCH_SIZE=${DBENCH_SIZE:-4G}
SHEEPFS=${SHEEPFS:-$repo/target/release/sheepfs}
JOBS=${JOBS:-seq-write seq-read rand-write rand-read sync-write}
do_pt=0 do_dbench=0 do_copy=1
for arg in "$@"; do
    case "$arg" in
        --passthrough) do_pt=1 ;;
        --dbench) do_dbench=1 ;;
        --no-copy) do_copy=0 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
    esac
done

die() { echo "bench/fio.sh: $*" >&2; exit 1; }
log() { echo "[$(date +%T)] $*" >&2; }
[ "$(id -u)" = 0 ] || die "run as root (FUSE mount, loop devices)"
for t in fio jq xfs_io; do command -v "$t" >/dev/null || die "$t missing: apt-get install -y fio jq xfsprogs"; done
[ "$do_pt" = 0 ] || command -v bindfs >/dev/null || die "--passthrough needs bindfs: apt-get install -y bindfs"
[ "$do_dbench" = 0 ] || command -v dbench >/dev/null || die "--dbench needs dbench: apt-get install -y dbench e2fsprogs"
if [ ! -x "$SHEEPFS" ]; then
    log "building $SHEEPFS (cargo build --release --bins)"
    (cd "$repo" && cargo build --release --bins) >&2
fi

work=${WORKDIR:-$(mktemp -d /var/tmp/sheep-bench.XXXXXX)}
mkdir -p "$work"/{local,mnt,pt,json,ext4}
mnt=$work/mnt
pid=""
loops=()
mounts=()

cleanup() {
    set +e
    local m l
    for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m"; done
    for l in "${loops[@]}"; do losetup -d "$l"; done
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && { log "sheepfs did not stop, SIGKILL $pid"; kill -KILL "$pid"; }
        wait "$pid" 2>/dev/null
    fi
    [ -z "${MOUNT:-}" ] && grep -q " $mnt " /proc/self/mountinfo && umount -l "$mnt"
    [ -n "${KEEP_JSON:-}" ] && mkdir -p "$KEEP_JSON" && cp "$work"/json/*.json "$KEEP_JSON"/ 2>/dev/null
    [ -z "${WORKDIR:-}" ] && rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- sheepfs, one host ----------------------------------------------------------------------
if [ -n "${MOUNT:-}" ]; then
    # An already running sheepfs (for example host 0 of a cluster: tests/benches/cluster.rs).
    mnt=$MOUNT
    log "using the sheepfs mounted on $mnt"
else
    log "starting $SHEEPFS $mnt (log: $work/sheepfs.log)"
    RUST_LOG=${RUST_LOG:-sheep=warn} "$SHEEPFS" "$mnt" --store "$work/store" \
        --admin-socket "$work/admin.sock" --no-mdns --listen 127.0.0.1:0 >"$work/sheepfs.log" 2>&1 &
    pid=$!
    for _ in $(seq 600); do
        kill -0 "$pid" 2>/dev/null || { cat "$work/sheepfs.log" >&2; die "sheepfs exited"; }
        if awk -v m="$mnt" '$5 == m && $0 ~ / - fuse\.sheepfs /' /proc/self/mountinfo | grep -q . \
            && [ -S "$work/admin.sock" ]; then
            break
        fi
        sleep 0.1
    done
    awk -v m="$mnt" '$5 == m' /proc/self/mountinfo | grep -q . || die "sheepfs not mounted after 60 s"
fi

if [ "$do_pt" = 1 ]; then
    bindfs "$work/local" "$work/pt"
    mounts+=("$work/pt")
fi

targets=(local sheepfs)
declare -A file=([local]=$work/local/vol [sheepfs]=$mnt/vol [passthrough]=$work/pt/vol)
[ "$do_pt" = 1 ] && targets=(local passthrough sheepfs)

# Runs fio job $2 (extra fio args in $3…) on target $1; JSON to json/TARGET-JOB.json.
run_fio() {
    local target=$1 job=$2
    shift 2
    fio --name="$job" --filename="${file[$target]}" --ioengine=libaio --direct=1 --size="$SIZE" \
        --group_reporting --output-format=json --output="$work/json/$target-$job.json" "$@"
}

job_args() {
    local t="--time_based --runtime=$RUNTIME --ramp_time=2"
    case "$1" in
        seq-write) echo "$t --rw=write --bs=1M --iodepth=8" ;;
        seq-read) echo "$t --rw=read --bs=1M --iodepth=8" ;;
        rand-write) echo "$t --rw=randwrite --bs=4k --iodepth=32 --randrepeat=0" ;;
        rand-read) echo "$t --rw=randread --bs=4k --iodepth=32 --randrepeat=0" ;;
        sync-write) echo "$t --rw=write --bs=4k --iodepth=1 --fsync=1" ;;
        *) die "unknown job $1" ;;
    esac
}

for target in "${targets[@]}"; do
    [ "$target" = passthrough ] && continue # Same file as local, already filled.
    truncate -s "$SIZE" "${file[$target]}"
    log "$target: filling $SIZE"
    run_fio "$target" fill --rw=write --bs=1M --iodepth=8
done
for job in $JOBS; do
    for target in "${targets[@]}"; do
        log "$target: $job (${RUNTIME}s)"
        # shellcheck disable=SC2046 # job_args is a list of words.
        run_fio "$target" "$job" $(job_args "$job")
    done
done

# ---- the table ------------------------------------------------------------------------------
# Prints metric $2 of json/$1.json: a jq expression over .jobs[0].
metric() { jq -r ".jobs[0] | $2" "$work/json/$1.json" 2>/dev/null || echo nan; }
row() { # row LABEL JOB JQ-EXPR
    local label=$1 job=$2 expr=$3 t v line base=""
    line="| $label |"
    for t in "${targets[@]}"; do
        v=$(metric "$t-$job" "$expr")
        if [ -f "$work/json/$t-$job.json" ]; then line+=" $(printf '%.1f' "$v") |"; else line+=" — |"; fi
        [ "$t" = local ] && base=$v
    done
    line+=" $(awk -v a="$v" -v b="$base" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }') |"
    echo "$line"
}
bw_r='.read.bw_bytes / 1048576'
bw_w='.write.bw_bytes / 1048576'
p50() { echo ".$1.$2.percentile[\"50.000000\"] / 1000"; }

echo
echo "## sheepfs vs local file: fio, $SIZE, ${RUNTIME}s per job, libaio direct=1 ($(date -u +%F), $(nproc) cores)"
echo
header="| job |"
sep="|---|"
for t in "${targets[@]}"; do header+=" $t |"; sep+="---:|"; done
echo "$header ratio (sheepfs/local) |"
echo "$sep---:|"
row "fill $SIZE, 1M qd8 (MiB/s)" fill "$bw_w"
for job in $JOBS; do
    case "$job" in
        seq-write) row "seq-write 1M qd8 (MiB/s)" "$job" "$bw_w" ;;
        seq-read) row "seq-read 1M qd8 (MiB/s)" "$job" "$bw_r" ;;
        rand-write) row "rand-write 4k qd32 (IOPS)" "$job" .write.iops ;;
        rand-read) row "rand-read 4k qd32 (IOPS)" "$job" .read.iops ;;
        sync-write)
            row "sync-write 4k qd1 fsync=1 (IOPS)" "$job" .write.iops
            row "sync-write p50 write latency (µs)" "$job" "$(p50 write clat_ns)"
            row "sync-write p50 fsync latency (µs)" "$job" "$(p50 sync lat_ns)"
            ;;
    esac
done

# ---- copy_file_range of a big, mostly empty volume ------------------------------------------
if [ "$do_copy" = 1 ]; then
    log "copy_file_range: $COPY_SIZE volume holding $COPY_DATA"
    truncate -s "$COPY_SIZE" "$mnt/src"
    fio --name=copy-src --filename="$mnt/src" --ioengine=libaio --direct=1 --rw=write --bs=1M \
        --iodepth=8 --size="$COPY_DATA" --output=/dev/null
    start=$(date +%s.%N)
    xfs_io -f -c "copy_range -s 0 -d 0 -l $COPY_SIZE $mnt/src" "$mnt/dst"
    end=$(date +%s.%N)
    copy_s=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')
    [ "$(stat -c %s "$mnt/dst")" = "$(stat -c %s "$mnt/src")" ] || die "dst size differs from src"
    cmp -n "$(numfmt --from=iec "$COPY_DATA")" "$mnt/src" "$mnt/dst" || die "dst data differs"
    rm -f "$mnt/src" "$mnt/dst"
fi

# ---- dbench on ext4 over a loop device ------------------------------------------------------
# Runs dbench on ext4 over a loop device on file $2; sets dbench_mbs (MB/s). Not run in $(…):
# the loop device and mount must reach the arrays that cleanup releases.
dbench_on() { # dbench_on TARGET FILE
    local target=$1 img=$2 dev dir=$work/ext4/$1
    truncate -s "$DBENCH_SIZE" "$img"
    dev=$(losetup -f --show "$img")
    loops+=("$dev")
    mkfs.ext4 -q -F "$dev"
    mkdir -p "$dir"
    mount "$dev" "$dir"
    mounts=("$dir" "${mounts[@]}")
    dbench -s -S -t "$DBENCH_TIME" -D "$dir" 4 >"$work/dbench-$target.txt" 2>&1 \
        || { tail -n 20 "$work/dbench-$target.txt" >&2; die "dbench failed on $target"; }
    dbench_mbs=$(awk '/Throughput/ { print $2 }' "$work/dbench-$target.txt")
}
if [ "$do_dbench" = 1 ]; then
    log "dbench: local"
    dbench_on local "$work/local/ext4.img"
    db_local=$dbench_mbs
    log "dbench: sheepfs"
    dbench_on sheepfs "$mnt/ext4.img"
    db_sheep=$dbench_mbs
fi

if [ -n "$pid" ]; then
    hwm=$(awk '/^VmHWM/ { print $2, $3 }' "/proc/$pid/status")
else
    hwm="(not started by this script)"
fi
echo
[ "$do_copy" = 1 ] && echo "* copy_file_range of a $COPY_SIZE volume holding $COPY_DATA (xfs_io copy_range): ${copy_s} s"
if [ "$do_dbench" = 1 ]; then
    echo "* dbench -s -S -t $DBENCH_TIME 4, ext4 on a loop device over a $DBENCH_SIZE file:" \
        "local $db_local MB/s, sheepfs $db_sheep MB/s"
fi
echo "* sheepfs peak RSS (VmHWM) after the run: $hwm"
echo "* Caveat: 'local' is O_DIRECT on the host's disk; the files behind sheepfs's store (and" \
    "bindfs's) go through the host page cache, so their throughput can exceed local's. The" \
    "sync-write rows (fsync each 4k write) show the cost of durability."
rev=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)
echo "* sheepfs: $SHEEPFS (source $rev), $(fio --version), kernel $(uname -r)"
