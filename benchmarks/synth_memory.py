"""Peak memory of the synthetic-data writer against the size of what it writes.

    python benchmarks/synth_memory.py [--items 10000 100000] [--shard-size 10000] [--format parquet]
                                      [--tracemalloc] [--keep DIR]

Each size runs in a fresh process (so `ru_maxrss` is that run's own peak). Reported per run: bytes
written, the data's decoded (Arrow) size, the process's RSS after imports and a one-item warm-up write
(the baseline), its peak RSS, and the ratios peak / bytes written, peak / decoded size and
(peak - baseline) / bytes written. Bounded memory shows as a peak that stays
flat while the items (and bytes) grow. `--tracemalloc` also reports the peak of Python-level
allocations (slower).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time


def _rss_now_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(args: argparse.Namespace) -> None:
    """One measured run: import, note the baseline, write, report peak."""
    from carevl.data.synth import SynthSpec, write_synth_items

    # Warm-up: the first Arrow conversion imports pandas (pyarrow does this lazily), a fixed cost of the
    # libraries rather than of the data. The baseline is the RSS after one tiny write.
    with tempfile.TemporaryDirectory() as warm:
        write_synth_items(warm, 1, seed=0, format=args.format)
    baseline = _rss_now_bytes()
    if args.tracemalloc:
        import tracemalloc
        tracemalloc.start()
    start = time.perf_counter()
    result = write_synth_items(args.out, args.child_items, seed=0, spec=SynthSpec(), format=args.format,
                               shard_size=args.shard_size)
    seconds = time.perf_counter() - start
    traced = None
    if args.tracemalloc:
        traced = tracemalloc.get_traced_memory()[1]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux reports KiB
    print(json.dumps({"items": args.child_items, "bytes": result.bytes_written, "files": len(result.files),
                      "arrow_bytes": _uncompressed_bytes(result.files, args.format),
                      "baseline_rss": baseline, "peak_rss": peak, "traced_peak": traced, "seconds": seconds}))


def _uncompressed_bytes(files: list[str], fmt: str) -> int:
    """The data's decoded (Arrow) size, from Parquet row-group metadata; for JSONL the text size."""
    if fmt != "parquet":
        return sum(os.path.getsize(f) for f in files)
    import pyarrow.parquet as pq

    total = 0
    for f in files:
        meta = pq.ParquetFile(f).metadata
        total += sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    return total


def _mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:9.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--shard-size", type=int, default=10_000)
    parser.add_argument("--format", choices=("parquet", "jsonl"), default="parquet")
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--keep", default=None, help="write under this folder and keep the output")
    parser.add_argument("--child-items", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_items is not None:
        child(args)
        return

    print("command: python benchmarks/synth_memory.py " + " ".join(sys.argv[1:]))
    print(f"format={args.format} shard_size={args.shard_size}")
    print(f"{'items':>10} {'written MiB':>12} {'data MiB':>9} {'base RSS':>9} {'peak RSS':>9} {'py peak':>9} "
          f"{'peak/written':>13} {'peak/data':>10} {'(peak-base)/written':>20} {'items/s':>8}", flush=True)
    root = args.keep or tempfile.mkdtemp(prefix="synth_memory_")
    rows = []
    try:
        for n in args.items:
            out = os.path.join(root, f"items_{n}")
            shutil.rmtree(out, ignore_errors=True)
            cmd = [sys.executable, __file__, "--child-items", str(n), "--out", out, "--shard-size",
                   str(args.shard_size), "--format", args.format] + (["--tracemalloc"] if args.tracemalloc else [])
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(f"{r['items']:>10} {_mib(r['bytes']):>12} {_mib(r['arrow_bytes'])} {_mib(r['baseline_rss'])} "
                  f"{_mib(r['peak_rss'])} {_mib(r['traced_peak'])} {r['peak_rss'] / r['bytes']:>13.3f} "
                  f"{r['peak_rss'] / r['arrow_bytes']:>10.3f} "
                  f"{(r['peak_rss'] - r['baseline_rss']) / r['bytes']:>20.4f} {r['items'] / r['seconds']:>8.0f}",
                  flush=True)
            if not args.keep:
                shutil.rmtree(out, ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if len(rows) > 1:
        growth = rows[-1]["peak_rss"] / rows[0]["peak_rss"]
        print(f"peak RSS grew {growth:.2f}x while items grew {rows[-1]['items'] / rows[0]['items']:.0f}x")

if __name__ == "__main__":
    main()
