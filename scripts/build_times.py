#!/usr/bin/env python3
"""The slowest translation units of a build folder, with their peak memory.

    scripts/build_times.py build/cpu-release            # table from .ninja_log (+ memory log)
    scripts/build_times.py build/cpu-release --top 20 --limit-s 90 --limit-mb 1500

Wall times come from ninja's log (the last build of each output). Peak memory comes from
tu_memory.log, written when the build folder was configured with this script as its compiler
launcher:

    cmake --preset cpu-release -DCMAKE_CXX_COMPILER_LAUNCHER="$PWD/scripts/build_times.py" \
                               -DCMAKE_CUDA_COMPILER_LAUNCHER="$PWD/scripts/build_times.py"

(as a launcher it runs the compiler, then appends "<peak kB> <seconds> <output>" to
tu_memory.log in the folder it was started from, which is the build folder). With
--limit-s / --limit-mb it exits 1 when a unit exceeds either limit.
"""
import os
import resource
import subprocess
import sys
import time


def launch(argv):
    """Compiler launcher: run argv, record the peak resident memory of its process tree."""
    start = time.monotonic()
    rc = subprocess.call(argv)
    seconds = time.monotonic() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = argv[argv.index("-o") + 1] if "-o" in argv else argv[-1]
    with open("tu_memory.log", "a") as log:
        log.write(f"{peak_kb} {seconds:.1f} {out}\n")
    return rc


def read_ninja_log(folder):
    path = os.path.join(folder, ".ninja_log")
    if not os.path.exists(path):
        sys.exit(f"build_times: {path} not found (is {folder} a Ninja build folder?)")
    times = {}
    with open(path) as log:
        for line in log:
            if line.startswith("#"):
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 4:
                continue
            start, end, output = int(parts[0]), int(parts[1]), parts[3]
            times[output] = (end - start) / 1000.0  # the newest entry of an output wins
    return times


def current_outputs(folder):
    """The outputs of the folder's build.ninja (None when ninja cannot say)."""
    try:
        listing = subprocess.run(["ninja", "-C", folder, "-t", "targets", "all"], check=True,
                                 capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {line.rsplit(":", 1)[0] for line in listing.splitlines()}


def read_memory_log(folder):
    peaks = {}
    path = os.path.join(folder, "tu_memory.log")
    if os.path.exists(path):
        with open(path) as log:
            for line in log:
                parts = line.split(maxsplit=2)
                if len(parts) == 3:
                    peaks[parts[2].strip()] = int(parts[0]) / 1024.0  # MB
    return peaks


def main():
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--limit-s", type=float, default=None)
    parser.add_argument("--limit-mb", type=float, default=None)
    args = parser.parse_args()

    times = read_ninja_log(args.folder)
    peaks = read_memory_log(args.folder)
    # Objects the build files still name (the log also remembers outputs no longer built).
    current = current_outputs(args.folder)
    units = {o: t for o, t in times.items()
             if o.endswith(".o") and (current is None or o in current)}
    if not units:
        sys.exit(f"build_times: no object files in {args.folder}/.ninja_log")
    rows = sorted(units.items(), key=lambda kv: -kv[1])
    print(f"{'seconds':>8} {'peak MB':>8}  translation unit")
    for output, seconds in rows[: args.top]:
        mb = peaks.get(output)
        print(f"{seconds:8.1f} {mb:8.0f}  {output}" if mb is not None else
              f"{seconds:8.1f} {'-':>8}  {output}")
    total = sum(units.values())
    print(f"{len(units)} units, {total:.0f} s of compilation in all"
          + (f", peak {max(peaks.values()):.0f} MB" if peaks else ""))
    over = [o for o, t in units.items()
            if (args.limit_s is not None and t > args.limit_s)
            or (args.limit_mb is not None and peaks.get(o, 0) > args.limit_mb)]
    if over:
        print(f"over the limits: {', '.join(sorted(over))}")
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-") and not os.path.isdir(sys.argv[1]):
        sys.exit(launch(sys.argv[1:]))
    sys.exit(main())
