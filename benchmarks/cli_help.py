"""Time to answer `unimd --help` and `unimd <command> --help` (target: under 1 s each; the grammar imports no torch).

Each command runs in a fresh interpreter, as a user would call it; the table gives the median wall time of
`--repeats` runs and whether torch was imported. The machine load is printed with it: on a shared machine it moves
the numbers.

    .venv/bin/python benchmarks/cli_help.py [--repeats 5]
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = [[], ["info"], ["demo"], ["train"], ["eval"], ["docs"], ["data", "check"], ["predict"], ["features"], ["tables"]]
CODE = ("import sys\nfrom unimd.cli import main\ntry: main(sys.argv[1:])\nexcept SystemExit: pass\n"
        "sys.stderr.write('torch imported: %s' % ('torch' in sys.modules))")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="runs per command (default 5)")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; {os.cpu_count()} CPUs")
    print(f"{'command':<28} {'median s':>9} {'max s':>7}  torch")
    for cmd in COMMANDS:
        times, torch_seen = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            r = subprocess.run([sys.executable, "-c", CODE, *cmd, "--help"], capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            torch_seen = r.stderr.strip().endswith("True")
        name = " ".join(["unimd", *cmd, "--help"])
        print(f"{name:<28} {statistics.median(times):9.3f} {max(times):7.3f}  {'yes' if torch_seen else 'no'}")


if __name__ == "__main__":
    main()
