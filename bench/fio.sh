#!/bin/bash
# bench/fio.sh - compares a 1-host sheepfs volume with a plain local file, in one run.
#
# Usage (as root, from anywhere in the repository):
#   bench/fio.sh [--passthrough] [--dbench] [--no-copy] [--no-local]
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
#     daemon's memory (VmRSS sampled every second during the load, and VmHWM) and the time of
#     two whole-volume copy_file_range (`xfs_io copy_range`, COW: should be instant whatever the
#     size): of a COPY_SIZE volume that holds COPY_DATA of data, and of the SIZE fio volume,
#     written all over by then.
#   * --passthrough adds a column for a pass-through FUSE mount of the local file (bindfs,
#     `apt-get install bindfs`), which separates FUSE's own cost from sheepfs's.
#   * --dbench adds `dbench -s -S -t DBENCH_TIME 4` on ext4 over a loop device, on the sheepfs
#     volume and on the local file.
#   * --no-copy skips the copy_file_range measurements.
#   * --no-local skips the local file (for a second sheepfs target in one comparison: see
#     `cargo bench -p sheep-tests --bench cluster -- compare`, which drives this script).
#
# Environment (defaults in brackets):
#   RUNTIME [20]  seconds per fio job      SIZE [2G]         volume/file size of the fio jobs
#   COPY_SIZE [10G] COPY_DATA [1G]          DBENCH_TIME [30]  DBENCH_SIZE [4G]
#   SHEEPFS [$CARGO_TARGET_DIR or target, /release/sheepfs]
#   WORKDIR [a new dir under /var/tmp] (on a local fs)
#   JOBS ["seq-write seq-read rand-write rand-read sync-write"]
#   KEEP_JSON=DIR  keeps fio's JSON output (and the log of the sheepfs it started) in DIR.
#   MOUNT=DIR  use the sheepfs already mounted on DIR (e.g. host 0 of a 3-host cluster started
#              by `cargo bench -p sheep-tests --bench cluster -- fio`) instead of starting one.
#   LABEL [sheepfs]  the name of the sheepfs target in the table and in RESULTS.
#   RESULTS=FILE  appends every figure to FILE, one `TARGET<tab>KEY<tab>VALUE` line each
#              (TARGET: local or LABEL; KEY: JOB.mibs, JOB.iops, sync-write.p50_write_us,
#              sync-write.p50_fsync_us, sync-write.p50_write_fsync_us, dbench.mbs,
#              copy.sparse_s, copy.full_s, rss.NAME.{hwm_kib,peak_kib,end_kib}, meta.*).
#   SHEEP_PIDS ["host0=PID" of the sheepfs it started]  "NAME=PID …": the daemons whose memory
#              is sampled (with MOUNT, the caller names them).
#   PROFILE=DIR  records `perf record -e cpu-clock -a -g -- sleep PROFILE_SECS [15]`, from 3 s
#              into each job named in PROFILE_JOBS ["rand-write sync-write"; an entry is JOB or
#              TARGET:JOB], to DIR/TARGET-JOB.perf.data; at the end writes beside it
#              TARGET-JOB.top.txt (`perf report --no-children --sort comm,dso,sym --stdio`, first
#              100 lines), .flat.txt (the same without call chains), .dso.txt (by DSO), and
#              .ours.txt: the shares of fio's and the daemons' own samples (by thread, DSO and
#              symbol; other processes on the machine left out), and .areas.txt: the same samples
#              by area (our code by function; kernel: FUSE, TCP, ext4/page cache, scheduler…).
#              The profiled job's figures include perf's own overhead.
# Needs: fio, jq, xfs_io (xfsprogs), e2fsprogs + dbench for --dbench, bindfs for --passthrough,
# perf for PROFILE (`scripts/install-deps.sh --bench` installs all but perf).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
RUNTIME=${RUNTIME:-20}
SIZE=${SIZE:-2G}
COPY_SIZE=${COPY_SIZE:-10G}
COPY_DATA=${COPY_DATA:-1G}
DBENCH_TIME=${DBENCH_TIME:-30}
DBENCH_SIZE=${DBENCH_SIZE:-4G}
SHEEPFS=${SHEEPFS:-${CARGO_TARGET_DIR:-$repo/target}/release/sheepfs}
JOBS=${JOBS:-seq-write seq-read rand-write rand-read sync-write}
LABEL=${LABEL:-sheepfs}
PROFILE_JOBS=${PROFILE_JOBS:-rand-write sync-write}
PROFILE_SECS=${PROFILE_SECS:-15}
do_pt=0 do_dbench=0 do_copy=1 do_local=1
for arg in "$@"; do
    case "$arg" in
        --passthrough) do_pt=1 ;;
        --dbench) do_dbench=1 ;;
        --no-copy) do_copy=0 ;;
        --no-local) do_local=0 ;;
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
[ -z "${PROFILE:-}" ] || command -v perf >/dev/null || die "PROFILE needs perf: apt-get install -y linux-perf"
[ "$do_pt" = 0 ] || [ "$do_local" = 1 ] || die "--passthrough needs the local file (no --no-local)"
if ! [[ "$LABEL" =~ ^[A-Za-z0-9_-]+$ ]] || [ "$LABEL" = local ]; then
    die "LABEL must be a word other than local"
fi
if [ -z "${MOUNT:-}" ] && [ ! -x "$SHEEPFS" ]; then
    log "building $SHEEPFS (cargo build --release --bins)"
    (cd "$repo" && cargo build --release --bins) >&2
fi

work=${WORKDIR:-$(mktemp -d /var/tmp/sheep-bench.XXXXXX)}
mkdir -p "$work"/{local,mnt,pt,json,ext4}
mnt=$work/mnt
pid=""
sampler=""
prof_pid=""
loops=()
mounts=()

cleanup() {
    set +e
    local m l
    for l in "$sampler" "$prof_pid"; do
        [ -n "$l" ] && kill -0 "$l" 2>/dev/null && kill -TERM "$l" && wait "$l" 2>/dev/null
    done
    for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m"; done
    for l in "${loops[@]}"; do losetup -d "$l"; done
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && { log "sheepfs did not stop, SIGKILL $pid"; kill -KILL "$pid"; }
        wait "$pid" 2>/dev/null
    fi
    [ -z "${MOUNT:-}" ] && grep -q " $mnt " /proc/self/mountinfo && umount -l "$mnt"
    if [ -n "${KEEP_JSON:-}" ]; then
        mkdir -p "$KEEP_JSON" && cp "$work"/json/*.json "$KEEP_JSON"/ 2>/dev/null
        [ -f "$work/sheepfs.log" ] && cp "$work/sheepfs.log" "$KEEP_JSON"/
    fi
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
    SHEEP_PIDS=${SHEEP_PIDS:-host0=$pid}
fi

# ---- memory: VmRSS of every daemon of SHEEP_PIDS, every second, until the end --------------
if [ -n "${SHEEP_PIDS:-}" ]; then
    (
        while :; do
            for np in $SHEEP_PIDS; do
                awk -v n="${np%%=*}" '/^VmRSS/ { print n, $2 }' "/proc/${np#*=}/status" 2>/dev/null || true
            done
            sleep 1
        done
    ) >"$work/rss.txt" &
    sampler=$!
fi

if [ "$do_pt" = 1 ]; then
    bindfs "$work/local" "$work/pt"
    mounts+=("$work/pt")
fi

targets=(local sheepfs)
declare -A file=([local]=$work/local/vol [sheepfs]=$mnt/vol [passthrough]=$work/pt/vol)
declare -A name=([local]=local [sheepfs]=$LABEL [passthrough]=passthrough)
[ "$do_pt" = 1 ] && targets=(local passthrough sheepfs)
[ "$do_local" = 0 ] && targets=(sheepfs)

# Appends figure KEY=VALUE of target $1 to RESULTS.
result() { # result TARGET KEY VALUE
    [ -z "${RESULTS:-}" ] || printf '%s\t%s\t%s\n' "${name[$1]:-$1}" "$2" "$3" >>"$RESULTS"
}

# perf while a job runs, when PROFILE is set and PROFILE_JOBS names it (see the header).
profiled=()
profile_start() { # profile_start TARGET JOB
    local p want=0 out
    prof_pid=""
    [ -n "${PROFILE:-}" ] || return 0
    for p in $PROFILE_JOBS; do
        if [ "$p" = "$2" ] || [ "$p" = "${name[$1]}:$2" ]; then want=1; fi
    done
    [ "$want" = 1 ] || return 0
    mkdir -p "$PROFILE"
    out=$PROFILE/${name[$1]}-$2
    log "${name[$1]}: $2: perf record for ${PROFILE_SECS}s -> $out.perf.data"
    (
        sleep 3
        exec perf record -e cpu-clock -a -g -o "$out.perf.data" -- sleep "$PROFILE_SECS"
    ) >"$out.record.log" 2>&1 &
    prof_pid=$!
    profiled+=("$out")
}
# Waits for perf, if it runs, and notes the PIDs whose samples are the job's own (the
# daemons', and fio's: the descendants of $1); then waits for fio (the job, PID $1).
declare -A prof_pids=()
descendants() { local c; for c in $(pgrep -P "$1"); do echo "$c"; descendants "$c"; done; }
profile_wait() { # profile_wait JOB-PID
    local p ours=$1
    if [ -n "$prof_pid" ]; then
        wait "$prof_pid" || log "perf record failed: see its .record.log"
        prof_pid=""
        for p in ${SHEEP_PIDS:-} $(descendants "$1"); do ours+=,${p#*=}; done
        prof_pids[${profiled[-1]}]=$ours
    fi
    wait "$1"
}

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
        sync-write) echo "$t --rw=write --bs=4k --iodepth=1 --fsync=1 --lat_percentiles=1" ;;
        *) die "unknown job $1" ;;
    esac
}

for target in "${targets[@]}"; do
    [ "$target" = passthrough ] && continue # Same file as local, already filled.
    truncate -s "$SIZE" "${file[$target]}"
    log "${name[$target]}: filling $SIZE"
    run_fio "$target" fill --rw=write --bs=1M --iodepth=8
done
for job in $JOBS; do
    for target in "${targets[@]}"; do
        log "${name[$target]}: $job (${RUNTIME}s)"
        profile_start "$target" "$job"
        # shellcheck disable=SC2046 # job_args is a list of words.
        run_fio "$target" "$job" $(job_args "$job") &
        profile_wait $!
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
p50_sum="$(p50 write lat_ns) + $(p50 sync lat_ns)"

# The figures, to RESULTS.
if [ -n "${RESULTS:-}" ]; then
    for t in "${targets[@]}"; do
        result "$t" meta.size "$SIZE"
        result "$t" meta.runtime_s "$RUNTIME"
        result "$t" fill.mibs "$(metric "$t-fill" "$bw_w")"
        for job in $JOBS; do
            case "$job" in
                seq-write) result "$t" "$job.mibs" "$(metric "$t-$job" "$bw_w")" ;;
                seq-read) result "$t" "$job.mibs" "$(metric "$t-$job" "$bw_r")" ;;
                rand-write) result "$t" "$job.iops" "$(metric "$t-$job" .write.iops)" ;;
                rand-read) result "$t" "$job.iops" "$(metric "$t-$job" .read.iops)" ;;
                sync-write)
                    result "$t" "$job.iops" "$(metric "$t-$job" .write.iops)"
                    result "$t" "$job.p50_write_us" "$(metric "$t-$job" "$(p50 write lat_ns)")"
                    result "$t" "$job.p50_fsync_us" "$(metric "$t-$job" "$(p50 sync lat_ns)")"
                    result "$t" "$job.p50_write_fsync_us" "$(metric "$t-$job" "$p50_sum")"
                    ;;
            esac
        done
    done
fi

echo
echo "## sheepfs vs local file: fio, $SIZE, ${RUNTIME}s per job, libaio direct=1 ($(date -u +%F), $(nproc) cores)"
echo
header="| job |"
sep="|---|"
for t in "${targets[@]}"; do header+=" ${name[$t]} |"; sep+="---:|"; done
echo "$header ratio ($LABEL/local) |"
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
            row "sync-write p50 write latency (µs)" "$job" "$(p50 write lat_ns)"
            row "sync-write p50 fsync latency (µs)" "$job" "$(p50 sync lat_ns)"
            row "sync-write p50 write + p50 fsync (µs)" "$job" "$p50_sum"
            ;;
    esac
done

# ---- copy_file_range of a big, mostly empty volume, and of the full fio volume -------------
# Copies $1 to $2 whole with copy_file_range; sets copy_s (seconds) and checks the first $3.
copy_whole() { # copy_whole SRC DST CHECK-BYTES
    local start end
    start=$(date +%s.%N)
    xfs_io -f -c "copy_range -s 0 -d 0 -l $(stat -c %s "$1") $1" "$2"
    end=$(date +%s.%N)
    copy_s=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')
    [ "$(stat -c %s "$2")" = "$(stat -c %s "$1")" ] || die "$2: size differs from $1"
    cmp -n "$3" "$1" "$2" || die "$2: data differs from $1"
}
if [ "$do_copy" = 1 ]; then
    log "copy_file_range: $COPY_SIZE volume holding $COPY_DATA"
    truncate -s "$COPY_SIZE" "$mnt/src"
    fio --name=copy-src --filename="$mnt/src" --ioengine=libaio --direct=1 --rw=write --bs=1M \
        --iodepth=8 --size="$COPY_DATA" --output=/dev/null
    copy_whole "$mnt/src" "$mnt/dst" "$(numfmt --from=iec "$COPY_DATA")"
    copy_sparse_s=$copy_s
    result sheepfs copy.sparse_s "$copy_sparse_s"
    rm -f "$mnt/src" "$mnt/dst"
    log "copy_file_range: the $SIZE fio volume"
    copy_whole "$mnt/vol" "$mnt/vol.copy" 64M
    copy_full_s=$copy_s
    result sheepfs copy.full_s "$copy_full_s"
    rm -f "$mnt/vol.copy"
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
db_local="—"
if [ "$do_dbench" = 1 ]; then
    if [ "$do_local" = 1 ]; then
        log "dbench: local"
        dbench_on local "$work/local/ext4.img"
        db_local=$dbench_mbs
        result local dbench.mbs "$db_local"
    fi
    log "dbench: $LABEL"
    dbench_on sheepfs "$mnt/ext4.img"
    db_sheep=$dbench_mbs
    result sheepfs dbench.mbs "$db_sheep"
fi

# ---- memory ---------------------------------------------------------------------------------
mem=()
if [ -n "$sampler" ]; then
    kill -TERM "$sampler"
    wait "$sampler" 2>/dev/null || true
    sampler=""
    for np in $SHEEP_PIDS; do
        n=${np%%=*}
        hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/${np#*=}/status" 2>/dev/null || true)
        peak=$(awk -v n="$n" '$1 == n && $2 > m { m = $2 } END { print m + 0 }' "$work/rss.txt")
        last=$(awk -v n="$n" '$1 == n { v = $2 } END { print v + 0 }' "$work/rss.txt")
        result sheepfs "rss.$n.hwm_kib" "${hwm:-nan}"
        result sheepfs "rss.$n.peak_kib" "$peak"
        result sheepfs "rss.$n.end_kib" "$last"
        mem+=("$n: VmHWM ${hwm:-?} kB, VmRSS sampled under load: peak $peak kB, last $last kB")
    done
fi

# ---- profiles -------------------------------------------------------------------------------
# Reads `perf script -G -F comm,pid,ip,sym,dso` and prints the share of the samples of the PIDs
# in $1 (comma-separated: fio's and the daemons'; the machine may run other things meanwhile),
# by thread name (digits dropped), by DSO, and by DSO and symbol (top 60).
ours_profile() { # ours_profile PIDS
    awk -v pids="$1" '
        BEGIN { n = split(pids, a, ","); for (i = 1; i <= n; i++) want[a[i]] = 1 }
        { total++ }
        !($2 in want) { next }
        {
            ours++
            comm = $1; gsub(/[0-9]+/, "N", comm)
            dso = $NF; gsub(/^\(|\)$/, "", dso); sub(/.*\//, "", dso)
            sym = $0; sub(/^ *[^ ]+ +[0-9]+ +[0-9a-f]+ /, "", sym); sub(/ \([^()]*\)$/, "", sym)
            c[comm]++; d[dso]++; ds[dso "  " sym]++
        }
        END {
            if (!ours) { print "no samples of PIDs " pids; exit }
            printf "# %d of %d samples (%.1f%%) are of fio and the daemons (PIDs %s);", ours, total, 100 * ours / total, pids
            print " the shares below are of those."
            for (k in c) printf "comm %6.2f%%  %s\n", 100 * c[k] / ours, k
            for (k in d) printf "dso  %6.2f%%  %s\n", 100 * d[k] / ours, k
            for (k in ds) printf "sym  %6.2f%%  %s\n", 100 * ds[k] / ours, k
        }' | sort -k1,1 -k2,2nr | awk '$1 != "sym" || ++n <= 60'
}
# Reads `perf script -F comm,pid,ip,sym,dso` (with call chains) and prints the share of each
# area in the samples of the PIDs in $1: user code by DSO and function; kernel code by the first
# frame, from the sampled one outwards, that names an area (so a lock released in a wakeup
# counts as a wakeup), a copy of data when the sampled function itself copies. Per process
# (fio, sheepfs) and in all.
areas_profile() { # areas_profile PIDS
    awk -v pids="$1" '
        BEGIN { n = split(pids, a, ","); for (i = 1; i <= n; i++) want[a[i]] = 1 }
        function area(   i, s) {
            if (dso[1] != "[kernel.kallsyms]") {
                s = dso[1]; sub(/.*\//, "", s)
                if (s == "libc.so.6" && sym[1] ~ /malloc|free|realloc|calloc/) return "user libc: malloc/free"
                if (s ~ /^libc|^libpthread/) return "user libc: " sym[1]
                if (s == "sheepfs") return "user sheepfs: " sym[1]
                return "user " s
            }
            if (sym[1] ~ /memcpy|memmove|memset|copy_to_iter|copy_from_iter|copy_page|copy_folio|copy_user|rep_movs|__get_user|__put_user|csum_partial_copy/)
                return "kernel: copy/memcpy"
            for (i = 1; i <= nf; i++) {
                s = sym[i]
                if (s ~ /^fuse_|^__fuse_|fuse_dev|fuse_file|fuse_direct/) return "kernel: FUSE"
                if (s ~ /try_to_wake_up|wake_up|__schedule|schedule|finish_task_switch|futex|__switch_to|pick_next|enqueue_task|dequeue_task|ttwu|select_task_rq|idle/) return "kernel: scheduler/wakeups/futex"
                if (s ~ /^tcp_|^inet_|^ip_|^__ip_|__dev_queue_xmit|net_rx|napi|__netif|netif_|loopback|veth|^sock_|sk_stream|__sys_sendto|__sys_recvfrom|skb|__sk_/) return "kernel: TCP/loopback/veth"
                if (s ~ /virtqueue|virtio|virtblk|^blk_|^bio_|dd_insert|dd_dispatch|submit_bio|iowrite/) return "kernel: block I/O (virtio disk)"
                if (s ~ /^ext4_|jbd2|filemap|folio|iomap|generic_perform_write|writeback|writepages|mark_buffer|block_write|__block_|page_cache|pagecache|balance_dirty/) return "kernel: ext4/page cache"
                if (s ~ /aio|io_submit|io_getevents|read_events/) return "kernel: aio"
                if (s ~ /^do_syscall_64|entry_SYSCALL|syscall_exit|exit_to_user_mode|syscall_return/) return "kernel: syscall entry/exit"
            }
            return "kernel other: " sym[1]
        }
        function flush(   k) {
            if (pid == "") return
            total++
            if (pid in want && nf > 0) {
                k = area(); ours++; all[k]++; per[who " | " k]++; whos[who]++
                cls = k; sub(/:.*/, "", cls); sub(/ other$/, "", cls); class[cls]++
            }
            pid = ""; nf = 0
        }
        /^[^ \t]/ { flush(); pid = $2; who = ($1 == "fio") ? "fio" : "sheepfs"; next }
        /^[ \t]+[0-9a-f]+ / {
            nf++; dso[nf] = $NF; gsub(/^\(|\)$/, "", dso[nf])
            s = $0; sub(/^[ \t]+[0-9a-f]+ /, "", s); sub(/ \([^()]*\)$/, "", s); sym[nf] = s
            next
        }
        /^$/ { flush() }
        END {
            flush()
            if (!ours) { print "no samples of PIDs " pids; exit }
            printf "# %d of %d samples (%.1f%%) are of fio and the daemons; shares of those:\n", ours, total, 100 * ours / total
            for (w in whos) printf "proc  %6.2f%%  %s\n", 100 * whos[w] / ours, w
            for (c in class) printf "class %6.2f%%  %s\n", 100 * class[c] / ours, c
            for (k in all) printf "all   %6.2f%%  %s\n", 100 * all[k] / ours, k
            for (k in per) printf "per   %6.2f%%  %s\n", 100 * per[k] / ours, k
        }' | sort -k1,1 -k2,2nr | awk '$1 ~ /^(#|proc|class)$/ || $2 + 0 >= 0.3'
}
for out in "${profiled[@]}"; do
    [ -s "$out.perf.data" ] || continue
    log "perf report: $out"
    perf report -i "$out.perf.data" --no-children --sort comm,dso,sym --stdio >"$out.full.txt" 2>/dev/null || true
    head -n 100 "$out.full.txt" >"$out.top.txt"
    perf report -i "$out.perf.data" --no-children -g none --percent-limit 0.2 \
        --sort comm,dso,sym --stdio >"$out.flat.txt" 2>/dev/null || true
    perf report -i "$out.perf.data" --no-children -g none --sort dso --stdio >"$out.dso.txt" 2>/dev/null || true
    perf script -i "$out.perf.data" -G -F comm,pid,ip,sym,dso 2>/dev/null \
        | ours_profile "${prof_pids[$out]:-0}" >"$out.ours.txt" || true
    perf script -i "$out.perf.data" -F comm,pid,ip,sym,dso 2>/dev/null \
        | areas_profile "${prof_pids[$out]:-0}" >"$out.areas.txt" || true
done

echo
[ "$do_copy" = 1 ] && echo "* copy_file_range (xfs_io copy_range) of a $COPY_SIZE volume holding $COPY_DATA:" \
    "${copy_sparse_s} s; of the $SIZE fio volume, written all over: ${copy_full_s} s"
if [ "$do_dbench" = 1 ]; then
    echo "* dbench -s -S -t $DBENCH_TIME 4, ext4 on a loop device over a $DBENCH_SIZE file:" \
        "local $db_local MB/s, $LABEL $db_sheep MB/s"
fi
for m in "${mem[@]}"; do echo "* $LABEL memory, $m"; done
echo "* Caveat: 'local' is O_DIRECT on the host's disk; the files behind sheepfs's store (and" \
    "bindfs's) go through the host page cache, so their throughput can exceed local's. The" \
    "sync-write rows (fsync each 4k write) show the cost of durability."
rev=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)
echo "* sheepfs: $SHEEPFS (source $rev), $(fio --version), kernel $(uname -r)"
