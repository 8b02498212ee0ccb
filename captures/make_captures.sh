#!/usr/bin/env bash
# Regenerate every capture in captures/ and its oracles from real NBD peers on
# loopback.  Run as root (tcpdump, dumpcap):
#
#     captures/make_captures.sh            # all captures
#     captures/make_captures.sh NAME...    # only these (names without extension)
#
# Each capture starts tcpdump (dumpcap for pcapng) on one TCP port, then the
# server, then the clients; what the tools printed goes to captures/oracles/
# unchanged:
#   <name>.nbdkit.log        nbdkit's log filter (one line per request and reply)
#   <name>.<what>.json       a tool's JSON on stdout, exactly (it exited 0)
#   <name>.<what>.txt        a client's stdout, then "--- stderr ---" and its
#                            stderr if it printed any, then "--- exit status N ---"
# Every process started here is recorded by PID and stopped on exit; every wait
# is bounded.  A capture in which the kernel dropped packets is made again.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
DEST_ORACLES=$HERE/oracles       # where finished oracles go
ORACLES=                         # where the capture being made writes them (staging)
PEER=$ROOT/tests/peers/nbd_misbehave.py
PY=/usr/bin/python3              # python3-libnbd (nbdsh) only works with Debian's interpreter
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C.UTF-8
unset LIBNBD_DEBUG               # debug lines would end up in the client oracles

[ "$(id -u)" -eq 0 ] || { echo "run as root (tcpdump needs it)" >&2; exit 2; }
for tool in tcpdump dumpcap nbdkit qemu-nbd qemu-img qemu-io nbdinfo nbdcopy nbd-server fio psktool ss; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
"$PY" -c 'import nbd' || { echo "missing: python3-libnbd for $PY" >&2; exit 2; }

WORK=$(mktemp -d /tmp/nbdscope-captures.XXXXXX)
PIDS=()          # every background process this script started
CAP_PID=         # the running tcpdump/dumpcap
DROPPED=0        # packets the kernel dropped in the current capture

# ------------------------------------------------------------------ processes

# stop PID: SIGTERM (or $2), up to 5 s to exit, then SIGKILL; reap it and forget
# it, so that cleanup never signals a PID the system has since given to another
# process.
stop() {
  local pid=$1 sig=${2:-TERM} i keep=()
  if kill -0 "$pid" 2>/dev/null; then
    kill -"$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  for i in "${PIDS[@]}"; do [ "$i" = "$pid" ] || keep+=("$i"); done
  PIDS=("${keep[@]}")
}

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do stop "$pid"; done   # the list is expanded before stop edits it
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# spawn CMD...: start CMD in the background (output to $WORK/spawn.N.log), PID in $SPAWNED.
SPAWNS=0
spawn() {
  SPAWNS=$((SPAWNS + 1))
  "$@" >"$WORK/spawn.$SPAWNS.log" 2>&1 &
  SPAWNED=$!
  PIDS+=("$SPAWNED")
}

# wait_listen PORT PID: until something listens on PORT (checked with ss, not by
# connecting: a probe would be captured, and nbd-server -d would spend its only
# session on it); give up after 10 s or if PID died.
wait_listen() {
  local port=$1 pid=$2 i
  for ((i = 0; i < 100; i++)); do
    [ -n "$(ss -Hltn "sport = :$port")" ] && return 0
    kill -0 "$pid" 2>/dev/null || { echo "server on port $port exited:" >&2; tail "$WORK"/spawn.*.log >&2; return 1; }
    sleep 0.1
  done
  echo "nothing listens on port $port" >&2
  return 1
}

# wait_exit PID: up to 10 s for a process that ends by itself (nbd-server -d).
wait_exit() {
  local i
  for ((i = 0; i < 100; i++)); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  stop "$1"
}

# server PORT CMD...: start a server and wait until it listens; PID in $SERVER.
server() {
  local port=$1; shift
  spawn "$@"
  SERVER=$SPAWNED
  wait_listen "$port" "$SERVER"
}

# nbdkit_cmd PORT LOG PLUGIN ARGS...: an nbdkit command line in $NBDKIT, with the
# log filter writing LOG unless LOG is "-".
nbdkit_cmd() {
  local port=$1 log=$2 host=${HOST:-127.0.0.1}
  shift 2
  NBDKIT=(nbdkit -f --exit-with-parent -p "$port" -i "$host")
  if [ "$log" != - ]; then NBDKIT+=(--filter=log); fi
  NBDKIT+=("$@")
  if [ "$log" != - ]; then NBDKIT+=("logfile=$log"); fi
}

# ------------------------------------------------------------------ capturing

# capture_start FILE PORT [IFACE]: tcpdump on one TCP port, waiting until it listens.
# Immediate mode, so nothing is left in a ring block when it stops; 64 MiB of
# kernel buffer, or 64 KiB loopback segments get dropped.
capture_start() {
  local file=$1 port=$2 iface=${3:-lo} i
  : >"$WORK/capture.err"
  tcpdump -i "$iface" -B 65536 -s 0 -n -U --immediate-mode -Z root -w "$file" "tcp port $port" \
    2>"$WORK/capture.err" &
  CAP_PID=$!
  PIDS+=("$CAP_PID")
  for ((i = 0; i < 100; i++)); do
    grep -q "listening on" "$WORK/capture.err" && return 0
    kill -0 "$CAP_PID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$WORK/capture.err" >&2
  return 1
}

# capture_start_pcapng FILE PORT: the same with dumpcap, which writes pcapng natively.
capture_start_pcapng() {
  local file=$1 port=$2 i
  : >"$WORK/capture.err"
  dumpcap -i lo -B 64 -s 0 -f "tcp port $port" -w "$file" 2>"$WORK/capture.err" &
  CAP_PID=$!
  PIDS+=("$CAP_PID")
  for ((i = 0; i < 100; i++)); do
    grep -q "Capturing on" "$WORK/capture.err" && return 0
    kill -0 "$CAP_PID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$WORK/capture.err" >&2
  return 1
}

# capture_stop: let the last packets arrive, SIGINT (tcpdump flushes on it), read
# the drop count from its summary into $DROPPED.
capture_stop() {
  sleep 0.5
  stop "$CAP_PID" INT
  DROPPED=$(sed -n -e 's/^\([0-9]*\) packets\{0,1\} dropped by kernel.*/\1/p' \
                   -e "s/.*dropped on interface '[^']*': [0-9]*\/\([0-9]*\).*/\1/p" "$WORK/capture.err" | head -1)
  if [ -z "$DROPPED" ]; then
    echo "capture summary not found:" >&2
    cat "$WORK/capture.err" >&2
    DROPPED=1
  fi
}

# ------------------------------------------------------------------ oracles

# record ORACLE CMD...: run CMD (60 s at most); write its stdout, its stderr (if
# any) after a marker, and its exit status.  Returns CMD's exit status.
record() {
  local oracle=$1 rc=0
  shift
  timeout 60 "$@" >"$WORK/out" 2>"$WORK/err" </dev/null || rc=$?
  {
    cat "$WORK/out"
    if [ -s "$WORK/err" ]; then printf -- '--- stderr ---\n'; cat "$WORK/err"; fi
    printf -- '--- exit status %d ---\n' "$rc"
  } >"$oracle"
  return "$rc"
}

# record_json ORACLE CMD...: CMD must succeed; its stdout is the oracle, byte for
# byte; stderr, if any, goes next to it as ORACLE-without-.json.stderr.txt.
record_json() {
  local oracle=$1 rc=0
  shift
  timeout 60 "$@" >"$oracle" 2>"$WORK/err" </dev/null || rc=$?
  if [ -s "$WORK/err" ]; then cp "$WORK/err" "${oracle%.json}.stderr.txt"; fi
  if [ "$rc" -ne 0 ]; then echo "$* failed ($rc):" >&2; cat "$WORK/err" >&2; return "$rc"; fi
}

# run CMD...: a preparation step, not an oracle: must succeed within 60 s.
run() {
  timeout 60 "$@" </dev/null >"$WORK/out" 2>"$WORK/err" || {
    local rc=$?
    echo "$* failed ($rc):" >&2
    cat "$WORK/err" >&2
    return "$rc"
  }
}

# NBDSH URI SCRIPT [NBDSH-OPTIONS...]: an nbdsh command line (through Debian's
# interpreter) in $NBDSH_CMD.
NBDSH() { local uri=$1 script=$2; shift 2; NBDSH_CMD=("$PY" -m nbd "$@" -u "$uri" -c "$script"); }

# ------------------------------------------------------------------ captures
# Each function writes the capture to $OUT and its oracles into $ORACLES, and may
# use the scratch directory $TMP.

# The founding bug, server side: a 1024-byte export with minimum block size 512
# whose block status reply has a 1000-byte data extent and a 24-byte hole.
# Port 10809, so the default-port detection is exercised.
cap_seed_unaligned_extent() {
  local port=10809 log=$ORACLES/seed-unaligned-extent.nbdkit.log
  nbdkit_cmd $port "$log" eval \
    'get_size=echo 1024' \
    'block_size=echo 512 4096 33554432' \
    'can_extents=exit 0' \
    'extents=echo 0 1000 0; echo 1000 24 3' \
    'pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none'
  capture_start "$OUT" $port
  server $port "${NBDKIT[@]}"
  record_json "$ORACLES/seed-unaligned-extent.qemu-img-map.json" qemu-img map --output=json "nbd://127.0.0.1:$port"
  record "$ORACLES/seed-unaligned-extent.nbdinfo-map.txt" nbdinfo --map "nbd://127.0.0.1:$port" || true
  stop "$SERVER"
  capture_stop
}

# The founding bug, client side: nbdkit advertises CAN_MULTI_CONN (bit 8) but not
# SEND_CACHE (bit 10); nbdsh with strict mode off sends NBD_CMD_CACHE anyway,
# nbdkit refuses it, then a read; a second connection to the same export writes.
cap_seed_cache_flag() {
  local port=20001 log=$ORACLES/seed-cache-flag.nbdkit.log
  nbdkit_cmd $port "$log" eval \
    'get_size=echo 1048576' \
    'can_write=exit 0' \
    'can_multi_conn=exit 0' \
    'can_cache=echo none' \
    'pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none' \
    'pwrite=cat >/dev/null'
  NBDSH "nbd://127.0.0.1:$port" "$(cat <<'EOF'
h.set_strict_mode(0)
try:
    h.cache(4096, 0)
    print('cache: ok')
except nbd.Error as e:
    print('cache:', e)
print('read', len(h.pread(4096, 0)))
h2 = nbd.NBD()
h2.connect_uri(h.get_uri())
h2.pwrite(b'x' * 512, 0)
print('second connection wrote 512')
h2.shutdown()
h.shutdown()
EOF
)"
  capture_start "$OUT" $port
  server $port "${NBDKIT[@]}"
  record "$ORACLES/seed-cache-flag.nbdsh.txt" "${NBDSH_CMD[@]}"
  stop "$SERVER"
  capture_stop
}

# The qemu 3.0 server: bit 8 set and bit 10 clear, NBD_CMD_CACHE answered with
# success.  No real server here can be made to do that, so the scripted peer
# plays it; nbdsh opens two connections to the one export and writes on both.
cap_seed_cache_flag_server() {
  local port=20002
  NBDSH "nbd://127.0.0.1:$port" "$(cat <<'EOF'
h.set_strict_mode(0)
h.cache(4096, 0)
print('cache: ok')
print('read', len(h.pread(4096, 0)))
h2 = nbd.NBD()
h2.connect_uri(h.get_uri())
h.pwrite(b'a' * 512, 0)
h2.pwrite(b'b' * 512, 512)
h.flush()
print('can_multi_conn', h.can_multi_conn(), 'can_cache', h.can_cache())
h2.shutdown()
h.shutdown()
EOF
)"
  capture_start "$OUT" $port
  server $port "$PY" "$PEER" --port $port --tflags 0x10d --structured --cache-reply success \
    --sessions 2 --timeout 30
  record "$ORACLES/seed-cache-flag-server.nbdsh.txt" "${NBDSH_CMD[@]}"
  wait_exit "$SERVER"
  capture_stop
}

# What a client trusting CAN_MULTI_CONN sees from a server whose caches are not
# shared: the scripted peer acknowledges a write and a flush on one connection
# and keeps serving the old data on the other.
cap_stale_read_multi_conn() {
  local port=20012
  NBDSH "nbd://127.0.0.1:$port" "$(cat <<'EOF'
h2 = nbd.NBD()
h2.connect_uri(h.get_uri())
h.pwrite(b'N' * 4096, 0)
h.flush()
print('read back on the second connection:', h2.pread(4096, 0)[:16])
h.shutdown()
h2.shutdown()
EOF
)"
  capture_start "$OUT" $port
  server $port "$PY" "$PEER" --port $port --tflags 0x10d --drop-writes --sessions 2 --timeout 30
  record "$ORACLES/stale-read-multi-conn.nbdsh.txt" "${NBDSH_CMD[@]}"
  wait_exit "$SERVER"
  capture_stop
}

# nbdsh with strict mode off sends what nbdkit did not advertise or allow; the
# output says which requests nbdkit refused.
cap_client_misbehaves_nbdsh() {
  local port=20013 log=$ORACLES/client-misbehaves-nbdsh.nbdkit.log
  nbdkit_cmd $port "$log" eval \
    'get_size=echo 1048576' \
    'block_size=echo 512 4096 65536' \
    'can_write=exit 0' \
    'can_flush=exit 3' \
    'can_fua=echo none' \
    'can_trim=exit 3' \
    'can_multi_conn=exit 3' \
    'pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none' \
    'pwrite=cat >/dev/null'
  NBDSH "nbd://127.0.0.1:$port" "$(cat <<'EOF'
h.set_strict_mode(0)
h2 = nbd.NBD()
h2.connect_uri(h.get_uri())
h2.set_strict_mode(0)
steps = [
    ('unaligned read', lambda: h.pread(100, 1)),
    ('read past the end', lambda: h.pread(4096, 1048576 - 512)),
    ('flush not advertised', lambda: h.flush()),
    ('FUA not advertised', lambda: h.pwrite(b'f' * 512, 0, nbd.CMD_FLAG_FUA)),
    ('oversized write', lambda: h.pwrite(b'o' * 131072, 0)),
    ('trim not advertised', lambda: h.trim(4096, 0)),
    ('second connection writes', lambda: h2.pwrite(b's' * 512, 4096)),
]
for label, call in steps:
    try:
        call()
        print(label, 'ok')
    except nbd.Error as e:
        print(label, e)
h.shutdown()
h2.shutdown()
EOF
)"
  capture_start "$OUT" $port
  server $port "${NBDKIT[@]}"
  record "$ORACLES/client-misbehaves-nbdsh.nbdsh.txt" "${NBDSH_CMD[@]}"
  stop "$SERVER"
  capture_stop
}

# qemu-nbd -t on the default port; qemu-img convert writes a sparse raw image
# into it (writes and write-zeroes), then qemu-img map and info read it back.
cap_qemu_img_convert_map() {
  local port=10809 src=$TMP/src.raw dst=$TMP/dst.raw
  run qemu-img create -q -f raw "$src" 2M
  run qemu-img create -q -f raw "$dst" 2M
  run qemu-io -f raw -c 'write -P 0x11 0 64k' -c 'write -P 0x22 300k 64k' -c 'write -P 0x33 1M 100k' "$src"
  capture_start "$OUT" $port
  server $port qemu-nbd -t -f raw -b 127.0.0.1 -p $port "$dst"
  record "$ORACLES/qemu-img-convert-map.convert.txt" \
    qemu-img convert -n -f raw -O raw "$src" "nbd://127.0.0.1:$port"
  record_json "$ORACLES/qemu-img-convert-map.map.json" qemu-img map --output=json "nbd://127.0.0.1:$port"
  record_json "$ORACLES/qemu-img-convert-map.info.json" qemu-img info --output=json "nbd://127.0.0.1:$port"
  stop "$SERVER"
  capture_stop
  run cmp "$src" "$dst"
}

# nbdkit memory, nbdcopy with 4 connections and 4 threads, in and out.  nbdcopy
# hands each thread 128 MiB of the export at a time, so the export is 512 MiB
# (sparse, in memory) with 64 KiB of data in each quarter: then every
# connection carries requests, and the capture stays small.  The delay filter
# (inside the log filter) holds writes and zeroes 50 ms, so that one fast thread
# does not take every quarter of the copy in.
cap_nbdcopy_4conn_nbdkit_memory() {
  local port=20003 log=$ORACLES/nbdcopy-4conn-nbdkit-memory.nbdkit.log i
  local uri=nbd://127.0.0.1:$port
  truncate -s 512M "$TMP/in.img"
  for i in 0 1 2 3; do
    run qemu-io -f raw -c "write -P $((0x41 + i)) $((i * 128 + 7))M 64k" "$TMP/in.img"
  done
  nbdkit_cmd $port "$log" --filter=delay memory 512M delay-write=50ms delay-zero=50ms
  capture_start "$OUT" $port
  server $port "${NBDKIT[@]}"
  record "$ORACLES/nbdcopy-4conn-nbdkit-memory.copy-in.txt" \
    nbdcopy --connections=4 --threads=4 --request-size=65536 "$TMP/in.img" "$uri"
  record "$ORACLES/nbdcopy-4conn-nbdkit-memory.copy-out.txt" \
    nbdcopy --connections=4 --threads=4 --request-size=65536 "$uri" "$TMP/out.img"
  stop "$SERVER"
  capture_stop
  run cmp "$TMP/in.img" "$TMP/out.img"
}

# nbdkit data plugin (a sparse 128 KiB export), nbdinfo --list, --map and --json.
cap_nbdinfo_list_map() {
  local port=20004 log=$ORACLES/nbdinfo-list-map.nbdkit.log uri=nbd://127.0.0.1:20004
  nbdkit_cmd $port "$log" data 'data=@4096 1 2 3 4 @65536 0xff @^131072'
  capture_start "$OUT" $port
  server $port "${NBDKIT[@]}"
  record "$ORACLES/nbdinfo-list-map.list.txt" nbdinfo --list "$uri"
  record "$ORACLES/nbdinfo-list-map.map.txt" nbdinfo --map "$uri"
  record_json "$ORACLES/nbdinfo-list-map.info.json" nbdinfo --json "$uri"
  record_json "$ORACLES/nbdinfo-list-map.map.json" nbdinfo --map --json "$uri"
  stop "$SERVER"
  capture_stop
}

# A qcow2 image with a persistent dirty bitmap b0 (added after a first write, so
# only the later writes are dirty), served read-only by qemu-nbd -B b0.
cap_qemu_nbd_dirty_bitmap() {
  local port=20005 img=$TMP/bitmap.qcow2 uri=nbd://127.0.0.1:20005
  run qemu-img create -q -f qcow2 "$img" 4M
  run qemu-io -f qcow2 -c 'write -P 1 0 1M' "$img"
  run qemu-img bitmap --add "$img" b0
  run qemu-io -f qcow2 -c 'write -P 2 1M 64k' -c 'write -P 3 3M 4k' "$img"
  capture_start "$OUT" $port
  server $port qemu-nbd -t -r -f qcow2 -B b0 -b 127.0.0.1 -p $port "$img"
  record "$ORACLES/qemu-nbd-dirty-bitmap.dirty.txt" nbdinfo --map=qemu:dirty-bitmap:b0 "$uri"
  record "$ORACLES/qemu-nbd-dirty-bitmap.alloc.txt" nbdinfo --map "$uri"
  stop "$SERVER"
  capture_stop
}

# nbd-server from a config file.  With -d it stays in the foreground but serves
# one session and exits, so it is started afresh for each client.
cap_nbd_server_nbdinfo_nbdcopy() {
  local port=20006 disk=$TMP/export.img conf=$TMP/nbd-server.conf step=0
  local uri=nbd://127.0.0.1:20006/disk
  truncate -s 1M "$disk"
  head -c 262144 /dev/urandom >"$TMP/chunk"
  cat >"$conf" <<EOF
[generic]
user = root
group = root
listenaddr = 127.0.0.1
port = $port
allowlist = true
[disk]
exportname = $disk
EOF
  capture_start "$OUT" $port
  for client in "nbdinfo $uri" "nbdcopy --connections=1 --threads=1 $TMP/chunk $uri" "nbdinfo --list $uri"; do
    server $port nbd-server -C "$conf" -d
    # shellcheck disable=SC2086  # the client line is split into words on purpose
    record "$ORACLES/nbd-server-nbdinfo-nbdcopy.step$step.txt" $client || true
    wait_exit "$SERVER"
    step=$((step + 1))
  done
  capture_stop
  run cmp -n 262144 "$TMP/chunk" "$disk"
}

# fio's nbd engine: ~200 random 4 KiB reads and writes, 8 in flight.
cap_fio_iodepth8() {
  local port=20007 log=$ORACLES/fio-iodepth8.nbdkit.log
  nbdkit_cmd $port "$log" memory 1M
  capture_start "$OUT" $port
  server $port "${NBDKIT[@]}"
  record_json "$ORACLES/fio-iodepth8.fio.json" fio --name=nbd --ioengine=nbd --uri="nbd://127.0.0.1:$port" \
    --rw=randrw --bs=4k --iodepth=8 --size=1M --number_ios=200 --output-format=json
  stop "$SERVER"
  capture_stop
}

# nbdkit -o: the oldstyle handshake; nbdsh writes and reads, nbdinfo asks.
cap_oldstyle_nbdkit() {
  local port=20008 log=$ORACLES/oldstyle-nbdkit.nbdkit.log
  nbdkit_cmd $port "$log" memory 1M
  NBDKIT=("${NBDKIT[0]}" -o "${NBDKIT[@]:1}")
  NBDSH "nbd://127.0.0.1:$port" "$(cat <<'EOF'
print('protocol', h.get_protocol())
h.pwrite(b'o' * 4096, 0)
print(h.pread(16, 0))
h.shutdown()
EOF
)"
  capture_start "$OUT" $port
  server $port "${NBDKIT[@]}"
  record "$ORACLES/oldstyle-nbdkit.nbdsh.txt" "${NBDSH_CMD[@]}"
  record "$ORACLES/oldstyle-nbdkit.nbdinfo.txt" nbdinfo "nbd://127.0.0.1:$port"
  stop "$SERVER"
  capture_stop
}

# nbdkit requiring TLS with a pre-shared key: nbdinfo over nbds:// (STARTTLS,
# then everything encrypted), then a plaintext nbdinfo that is refused.
cap_tls_psk() {
  local port=20009 keys=$TMP/keys.psk
  run psktool -u alice -p "$keys"
  nbdkit_cmd $port - --tls=require --tls-psk="$keys" memory 1M
  capture_start "$OUT" $port
  server $port "${NBDKIT[@]}"
  record "$ORACLES/tls-psk.nbdinfo.txt" nbdinfo "nbds://alice@127.0.0.1:$port/?tls-psk-file=$keys"
  record "$ORACLES/tls-psk.plaintext-refused.txt" nbdinfo "nbd://127.0.0.1:$port" || true
  stop "$SERVER"
  capture_stop
}

# TLS 1.3 with a pre-shared key, and the key log the client wrote (SSLKEYLOGFILE, GnuTLS) shipped
# beside it as an oracle, so the decrypted session can be decoded and compared with nbdkit's log.
# The key and the secrets are made for this capture only.
cap_tls13_keylog() {
  local port=20014 keys=$TMP/keys.psk log=$ORACLES/tls13-keylog.nbdkit.log
  run psktool -u alice -p "$keys"
  nbdkit_cmd $port "$log" --tls=require --tls-psk="$keys" memory 1M
  # (nbdsh -u refuses a URI naming a local file, so the script connects itself)
  NBDSH_CMD=("$PY" -m nbd -c "h.set_uri_allow_local_file(True)"
             -c "h.connect_uri('nbds://alice@127.0.0.1:$port/?tls-psk-file=$keys')" -c "$(cat <<'EOF'
h.pwrite(b'T' * 8192, 4096)
print('read', len(h.pread(4096, 8192)))
h.zero(4096, 0)
h.flush()
h.shutdown()
EOF
)")
  capture_start "$OUT" $port
  server $port "${NBDKIT[@]}"
  SSLKEYLOGFILE=$ORACLES/tls13-keylog.keys record "$ORACLES/tls13-keylog.nbdsh.txt" "${NBDSH_CMD[@]}"
  stop "$SERVER"
  capture_stop
}

# IPv6 (::1), written as pcapng by dumpcap.
cap_ipv6() {
  local port=20010 log=$ORACLES/ipv6.nbdkit.log
  HOST=::1 nbdkit_cmd $port "$log" memory 1M
  NBDSH "nbd://[::1]:$port" "$(cat <<'EOF'
h.pwrite(b'6' * 8192, 4096)
print('read', len(h.pread(4096, 0)))
h.zero(4096, 0)
h.shutdown()
EOF
)"
  capture_start_pcapng "$OUT" $port
  server $port "${NBDKIT[@]}"
  record "$ORACLES/ipv6.nbdsh.txt" "${NBDSH_CMD[@]}"
  stop "$SERVER"
  capture_stop
}

# tcpdump -i any: the Linux cooked link layer (SLL2 with Debian 12's libpcap).
cap_linux_cooked_any() {
  local port=20011 log=$ORACLES/linux-cooked-any.nbdkit.log
  nbdkit_cmd $port "$log" memory 1M
  NBDSH "nbd://127.0.0.1:$port" "$(cat <<'EOF'
h.pwrite(b'c' * 4096, 0, nbd.CMD_FLAG_FUA)
print('read', len(h.pread(8192, 0)))
h.flush()
h.trim(4096, 65536)
h.zero(4096, 131072, nbd.CMD_FLAG_NO_HOLE)
h.block_status(65536, 0, lambda *a: print('extents', a[0], a[2]) or 0)
h.shutdown()
EOF
)" --base-allocation
  capture_start "$OUT" $port any
  server $port "${NBDKIT[@]}"
  record "$ORACLES/linux-cooked-any.nbdsh.txt" "${NBDSH_CMD[@]}"
  stop "$SERVER"
  capture_stop
}

# name, file extension, function
CAPTURES=(
  "seed-unaligned-extent pcap cap_seed_unaligned_extent"
  "seed-cache-flag pcap cap_seed_cache_flag"
  "seed-cache-flag-server pcap cap_seed_cache_flag_server"
  "stale-read-multi-conn pcap cap_stale_read_multi_conn"
  "client-misbehaves-nbdsh pcap cap_client_misbehaves_nbdsh"
  "qemu-img-convert-map pcap cap_qemu_img_convert_map"
  "nbdcopy-4conn-nbdkit-memory pcap cap_nbdcopy_4conn_nbdkit_memory"
  "nbdinfo-list-map pcap cap_nbdinfo_list_map"
  "qemu-nbd-dirty-bitmap pcap cap_qemu_nbd_dirty_bitmap"
  "nbd-server-nbdinfo-nbdcopy pcap cap_nbd_server_nbdinfo_nbdcopy"
  "fio-iodepth8 pcap cap_fio_iodepth8"
  "oldstyle-nbdkit pcap cap_oldstyle_nbdkit"
  "tls-psk pcap cap_tls_psk"
  "ipv6 pcapng cap_ipv6"
  "tls13-keylog pcap cap_tls13_keylog"
  "linux-cooked-any pcap cap_linux_cooked_any"
)

# make_one NAME EXT FUNC: make one capture from scratch in a staging directory,
# again (up to 3 times) if the kernel dropped packets; only a finished capture
# replaces the shipped one and its oracles, so a failed or interrupted run
# leaves the previous set intact.
make_one() {
  local name=$1 ext=$2 func=$3 attempt size stage
  for attempt in 1 2 3; do
    stage=$WORK/stage.$name
    rm -rf "$stage"
    mkdir -p "$stage/oracles" "$stage/tmp"
    OUT=$stage/$name.$ext
    ORACLES=$stage/oracles
    TMP=$stage/tmp
    "$func"
    [ "$DROPPED" -eq 0 ] && break
    echo "  $name: kernel dropped $DROPPED packets (attempt $attempt)" >&2
  done
  [ "$DROPPED" -eq 0 ] || { echo "$name: packets dropped in every attempt" >&2; return 1; }
  size=$(stat -c %s "$OUT")
  [ "$size" -lt 1000000 ] || { echo "$name.$ext is $size bytes, over 1 MB" >&2; return 1; }
  rm -f "$HERE/$name.pcap" "$HERE/$name.pcapng" "$DEST_ORACLES/$name".*
  chmod 644 "$OUT" "$ORACLES"/*   # dumpcap creates its file 0600
  mv "$OUT" "$HERE/"
  mv "$ORACLES"/* "$DEST_ORACLES/"
  rm -rf "$stage"
  printf '%-32s %8d bytes\n' "$name.$ext" "$size"
}

mkdir -p "$DEST_ORACLES"
start=$SECONDS
for entry in "${CAPTURES[@]}"; do
  read -r name ext func <<<"$entry"
  if [ $# -gt 0 ]; then
    wanted=0
    for arg in "$@"; do [ "$arg" = "$name" ] && wanted=1; done
    [ $wanted -eq 1 ] || continue
  fi
  make_one "$name" "$ext" "$func"
done
echo "done in $((SECONDS - start)) s"
