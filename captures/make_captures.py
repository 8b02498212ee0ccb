#!/usr/bin/env python3
"""Regenerate every capture in captures/ from real peers on loopback.

Run as root (tcpdump): python3 captures/make_captures.py [NAME...]
Each capture records what the tools printed next to it in captures/oracles/,
so tests compare the decoder with what nbdkit, qemu-img and nbdinfo saw.
Every process started here is stopped by its PID; every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from tests.live import SYSTEM_PYTHON, nbdsh, process, run, tcpdump  # noqa: E402  (shared with the live tests)

ORACLES = HERE / "oracles"
PEER = HERE.parent / "tests" / "peers" / "nbd_misbehave.py"


def nbdkit(port: int, *args: str, log: Path | None = None, host: str = "127.0.0.1") -> list[str]:
    cmd = ["nbdkit", "-f", "-p", str(port), "-i", host]
    if log is not None:
        cmd += ["--filter=log", *args[:1], f"logfile={log}", *args[1:]]
    else:
        cmd += list(args)
    return cmd


# ---------------------------------------------------------------- captures

def seed_unaligned_extent(out: Path) -> None:
    port = 10809
    log = ORACLES / "seed-unaligned-extent.nbdkit.log"
    log.unlink(missing_ok=True)
    server = nbdkit(port, "eval", "get_size=echo 1024", "block_size=echo 512 4096 33554432",
                    "pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none",
                    "extents=echo 0 1000 0; echo 1000 24 3", "can_extents=exit 0", log=log)
    with process(server, port=port), tcpdump(out, port):
        run(["qemu-img", "map", "--output=json", f"nbd://127.0.0.1:{port}"],
            ORACLES / "seed-unaligned-extent.qemu-img-map.json")
        run(["nbdinfo", "--map", f"nbd://127.0.0.1:{port}"], ORACLES / "seed-unaligned-extent.nbdinfo-map.txt",
            check=False)


def seed_cache_flag(out: Path) -> None:
    """Server: CAN_MULTI_CONN (bit 8) without SEND_CACHE (bit 10); client sends CACHE anyway, twice over."""
    port = 20001
    log = ORACLES / "seed-cache-flag.nbdkit.log"
    log.unlink(missing_ok=True)
    server = nbdkit(port, "eval", "get_size=echo 1048576", "can_multi_conn=exit 0", "can_cache=echo none",
                    "can_write=exit 0", "pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none",
                    "pwrite=cat >/dev/null", log=log)
    script = ("h.set_strict_mode(0)\n"
              "try:\n    h.cache(4096, 0)\nexcept nbd.Error as e:\n    print('cache:', e)\n"
              "print('read', len(h.pread(4096, 0)))\n"
              "h2 = nbd.NBD(); h2.connect_uri(h.get_uri())\n"
              "h2.pwrite(b'x' * 512, 0)\nh2.shutdown()\n")
    with process(server, port=port), tcpdump(out, port):
        run(nbdsh(f"nbd://127.0.0.1:{port}", script), ORACLES / "seed-cache-flag.nbdsh.txt")


def seed_cache_flag_server(out: Path) -> None:
    """The qemu 3.0 server: bit 8 set, bit 10 clear, CACHE answered with success (a scripted peer)."""
    port = 20002
    peer = [SYSTEM_PYTHON, str(PEER), "--port", str(port), "--tflags", hex(0x1 | 0x4 | 0x8 | 0x100),
            "--cache-reply", "success", "--sessions", "3", "--timeout", "20"]
    script = ("h.set_strict_mode(0)\nh.cache(4096, 0)\nprint('cache ok')\n"
              "h2 = nbd.NBD(); h2.connect_uri(h.get_uri())\n"
              "h.pwrite(b'a' * 512, 0)\nh2.pwrite(b'b' * 512, 512)\nh.flush()\nh2.shutdown()\n")
    with process(peer, port=port), tcpdump(out, port):
        run(nbdsh(f"nbd://127.0.0.1:{port}", script), ORACLES / "seed-cache-flag-server.nbdsh.txt")


def stale_read(out: Path) -> None:
    """A server with CAN_MULTI_CONN that acknowledges writes and flushes but keeps serving old data:
    what a client trusting multi-conn would see from qemu 3.0's misnumbered flag (scripted peer)."""
    port = 20012
    peer = [SYSTEM_PYTHON, str(PEER), "--port", str(port), "--tflags", hex(0x1 | 0x4 | 0x8 | 0x100),
            "--drop-writes", "--sessions", "2", "--timeout", "20"]
    script = ("h2 = nbd.NBD(); h2.connect_uri(h.get_uri())\n"
              "h.pwrite(b'N' * 4096, 0)\nh.flush()\n"
              "print('read back on the second connection:', h2.pread(4096, 0)[:16])\n"
              "h.shutdown()\nh2.shutdown()\n")
    with process(peer, port=port), tcpdump(out, port):
        run(nbdsh(f"nbd://127.0.0.1:{port}", script), ORACLES / "stale-read-multi-conn.nbdsh.txt")


def client_misbehaves(out: Path) -> None:
    """nbdsh with strict mode off sends what the server did not advertise or allow."""
    port = 20013
    log = ORACLES / "client-misbehaves-nbdsh.nbdkit.log"
    log.unlink(missing_ok=True)
    server = nbdkit(port, "eval", "get_size=echo 1048576", "block_size=echo 512 4096 65536",
                    "can_write=exit 0", "can_flush=exit 3", "can_fua=echo none", "can_trim=exit 3",
                    "can_multi_conn=exit 3", "pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none",
                    "pwrite=cat >/dev/null", log=log)
    steps = [("unaligned read", "h.pread(100, 1)"), ("read past the end", "h.pread(4096, 1048576 - 512)"),
             ("flush not advertised", "h.flush()"), ("FUA not advertised", "h.pwrite(b'f' * 512, 0, nbd.CMD_FLAG_FUA)"),
             ("oversized write", "h.pwrite(b'o' * 131072, 0)"), ("trim not advertised", "h.trim(4096, 0)"),
             ("second connection writes", "h2.pwrite(b's' * 512, 4096)")]
    script = "h.set_strict_mode(0)\nh2 = nbd.NBD(); h2.connect_uri(h.get_uri()); h2.set_strict_mode(0)\n"
    for label, call in steps:
        script += f"try:\n    {call}\n    print({label!r}, 'ok')\nexcept nbd.Error as e:\n    print({label!r}, e)\n"
    script += "h.shutdown()\nh2.shutdown()\n"
    with process(server, port=port), tcpdump(out, port):
        run(nbdsh(f"nbd://127.0.0.1:{port}", script), ORACLES / "client-misbehaves-nbdsh.nbdsh.txt")


def qemu_img_convert_map(out: Path, work: Path) -> None:
    port = 10809
    src, dst = work / "src.raw", work / "dst.raw"
    with open(src, "wb") as f:
        f.truncate(2 << 20)
        for off in (0, 300 << 10, 1 << 20):
            f.seek(off)
            f.write(os.urandom(64 << 10))
    with open(dst, "wb") as f:
        f.truncate(2 << 20)
    server = ["qemu-nbd", "-t", "-f", "raw", "-p", str(port), "-b", "127.0.0.1", str(dst)]
    with process(server, port=port), tcpdump(out, port):
        run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(src), f"nbd://127.0.0.1:{port}"])
        run(["qemu-img", "map", "--output=json", f"nbd://127.0.0.1:{port}"],
            ORACLES / "qemu-img-convert-map.map.json")
        run(["qemu-img", "info", "--output=json", f"nbd://127.0.0.1:{port}"],
            ORACLES / "qemu-img-convert-map.info.json")


def nbdcopy_4conn(out: Path, work: Path) -> None:
    port = 20003
    log = ORACLES / "nbdcopy-4conn-nbdkit-memory.nbdkit.log"
    log.unlink(missing_ok=True)
    data = work / "data.bin"
    data.write_bytes(os.urandom(256 << 10))
    server = nbdkit(port, "memory", "256K", log=log)
    with process(server, port=port), tcpdump(out, port):
        uri = f"nbd://127.0.0.1:{port}"
        run(["nbdcopy", "--connections=4", "--threads=4", "--request-size=65536", str(data), uri])
        run(["nbdcopy", "--connections=4", "--threads=4", "--request-size=65536", uri, str(work / "back.bin")])
    if (work / "back.bin").read_bytes() != data.read_bytes():
        raise RuntimeError("nbdcopy round trip differs")


def nbdinfo_list_map(out: Path) -> None:
    port = 20004
    log = ORACLES / "nbdinfo-list-map.nbdkit.log"
    log.unlink(missing_ok=True)
    server = nbdkit(port, "data", "data=@4096 1 2 3 4 @65536 0xff @^131072", log=log)
    with process(server, port=port), tcpdump(out, port):
        uri = f"nbd://127.0.0.1:{port}"
        run(["nbdinfo", "--list", uri], ORACLES / "nbdinfo-list-map.list.txt")
        run(["nbdinfo", "--map", uri], ORACLES / "nbdinfo-list-map.map.txt")
        run(["nbdinfo", "--json", uri], ORACLES / "nbdinfo-list-map.info.json")


def dirty_bitmap(out: Path, work: Path) -> None:
    port = 20005
    img = work / "bitmap.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "4M"])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 1M", str(img)])
    run(["qemu-img", "bitmap", "--add", str(img), "b0"])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 2 1M 64k", "-c", "write -P 3 3M 4k", str(img)])
    server = ["qemu-nbd", "-t", "-r", "-f", "qcow2", "-B", "b0", "-p", str(port), "-b", "127.0.0.1", str(img)]
    with process(server, port=port), tcpdump(out, port):
        uri = f"nbd://127.0.0.1:{port}"
        run(["nbdinfo", "--map=qemu:dirty-bitmap:b0", uri], ORACLES / "qemu-nbd-dirty-bitmap.dirty.txt")
        run(["nbdinfo", "--map", uri], ORACLES / "qemu-nbd-dirty-bitmap.alloc.txt")


def nbd_server(out: Path, work: Path) -> None:
    port = 20006
    disk = work / "nbd-server.img"
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    conf = work / "nbd-server.conf"
    conf.write_text(f"[generic]\nuser = root\ngroup = root\nlistenaddr = 127.0.0.1\nport = {port}\n"
                    f"allowlist = true\n[disk]\nexportname = {disk}\n")
    server = ["nbd-server", "-C", str(conf), "-d"]
    uri = f"nbd://127.0.0.1:{port}/disk"
    with tcpdump(out, port):
        for step, cmd in enumerate((["nbdinfo", uri], ["nbdcopy"],
                                    ["nbdinfo", "--list", f"nbd://127.0.0.1:{port}"])):
            with process(server, port=port) as proc:  # -d: one session per server process
                oracle = ORACLES / f"nbd-server-nbdinfo-nbdcopy.step{step}.txt"
                if cmd[0] == "nbdcopy":
                    (work / "chunk").write_bytes(os.urandom(256 << 10))
                    cmd = ["nbdcopy", "--connections=1", "--threads=1", str(work / "chunk"), uri]
                run(cmd, oracle, check=False)
                del proc  # -d serves one session; the context manager stops it if it lingers


def fio_iodepth8(out: Path) -> None:
    port = 20007
    log = ORACLES / "fio-iodepth8.nbdkit.log"
    log.unlink(missing_ok=True)
    server = nbdkit(port, "memory", "1M", log=log)
    with process(server, port=port), tcpdump(out, port):
        run(["fio", "--name=nbd", "--ioengine=nbd", f"--uri=nbd://127.0.0.1:{port}", "--rw=randrw",
             "--bs=4k", "--iodepth=8", "--size=1M", "--number_ios=200", "--output-format=json"],
            ORACLES / "fio-iodepth8.fio.json")


def oldstyle(out: Path) -> None:
    port = 20008
    log = ORACLES / "oldstyle-nbdkit.nbdkit.log"
    log.unlink(missing_ok=True)
    server = nbdkit(port, "memory", "1M", log=log)
    server.insert(1, "-o")
    with process(server, port=port), tcpdump(out, port):
        run(nbdsh(f"nbd://127.0.0.1:{port}", "h.pwrite(b'o' * 4096, 0)\nprint(h.pread(16, 0))\n"),
            ORACLES / "oldstyle-nbdkit.nbdsh.txt")


def tls_psk(out: Path, work: Path) -> None:
    port = 20009
    keys = work / "keys.psk"
    keys.unlink(missing_ok=True)
    run(["psktool", "-u", "alice", "-p", str(keys)])
    server = nbdkit(port, "--tls=require", f"--tls-psk={keys}", "memory", "1M")
    uri = f"nbds://alice@127.0.0.1:{port}/?tls-psk-file={keys}"
    with process(server, port=port), tcpdump(out, port):
        run(["nbdinfo", uri], ORACLES / "tls-psk.nbdinfo.txt")
        run(["nbdinfo", f"nbd://127.0.0.1:{port}"], ORACLES / "tls-psk.plaintext-refused.txt", check=False)


def ipv6(out: Path) -> None:
    port = 20010
    log = ORACLES / "ipv6.nbdkit.log"
    log.unlink(missing_ok=True)
    server = nbdkit(port, "memory", "1M", log=log, host="::1")
    raw = out.with_suffix(".tmp.pcap")
    with process(server, host="::1", port=port), tcpdump(raw, port):
        run(nbdsh(f"nbd://[::1]:{port}", "h.pwrite(b'6' * 8192, 4096)\nh.pread(4096, 0)\nh.zero(4096, 0)\n"),
            ORACLES / "ipv6.nbdsh.txt")
    run(["editcap", "-F", "pcapng", str(raw), str(out)])
    raw.unlink()


def linux_cooked(out: Path) -> None:
    port = 20011
    log = ORACLES / "linux-cooked-any.nbdkit.log"
    log.unlink(missing_ok=True)
    server = nbdkit(port, "memory", "1M", log=log)
    script = ("h.pwrite(b'c' * 4096, 0, nbd.CMD_FLAG_FUA)\nh.pread(8192, 0)\nh.flush()\n"
              "h.trim(4096, 65536)\nh.zero(4096, 131072, nbd.CMD_FLAG_NO_HOLE)\n"
              "h.block_status(65536, 0, lambda *a: 0)\n")
    with process(server, port=port), tcpdump(out, port, iface="any"):
        run(nbdsh(f"nbd://127.0.0.1:{port}", script, base_allocation=True), ORACLES / "linux-cooked-any.nbdsh.txt")


CAPTURES: dict[str, tuple[str, Callable[..., None]]] = {
    "seed-unaligned-extent": ("pcap", seed_unaligned_extent),
    "seed-cache-flag": ("pcap", seed_cache_flag),
    "seed-cache-flag-server": ("pcap", seed_cache_flag_server),
    "stale-read-multi-conn": ("pcap", stale_read),
    "client-misbehaves-nbdsh": ("pcap", client_misbehaves),
    "qemu-img-convert-map": ("pcap", qemu_img_convert_map),
    "nbdcopy-4conn-nbdkit-memory": ("pcap", nbdcopy_4conn),
    "nbdinfo-list-map": ("pcap", nbdinfo_list_map),
    "qemu-nbd-dirty-bitmap": ("pcap", dirty_bitmap),
    "nbd-server-nbdinfo-nbdcopy": ("pcap", nbd_server),
    "fio-iodepth8": ("pcap", fio_iodepth8),
    "oldstyle-nbdkit": ("pcap", oldstyle),
    "tls-psk": ("pcap", tls_psk),
    "ipv6": ("pcapng", ipv6),
    "linux-cooked-any": ("pcap", linux_cooked),
}


def main(names: list[str]) -> int:
    if os.geteuid() != 0:
        print("run as root (tcpdump needs it)", file=sys.stderr)
        return 2
    ORACLES.mkdir(exist_ok=True)
    failed = []
    for name, (ext, make) in CAPTURES.items():
        if names and name not in names:
            continue
        out = HERE / f"{name}.{ext}"
        work = Path(tempfile.mkdtemp(prefix="nbdscope-cap-"))
        print(f"{name} ...", flush=True)
        try:
            params = make.__code__.co_varnames[:make.__code__.co_argcount]
            make(out, work) if "work" in params else make(out)
            size = out.stat().st_size
            print(f"  {out.name}: {size} bytes")
            if size > 1 << 20:
                raise RuntimeError(f"{out.name} is larger than 1 MB")
        except Exception as exc:  # report and carry on with the other captures
            print(f"  FAILED: {exc}", file=sys.stderr)
            failed.append(name)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
