"""Instructions per call of llmpool and of raw urllib3, a noise-free view of client CPU.

Starts ``canned_server.py`` in its own process (not instrumented), then runs
each contender in a client process under ``valgrind --tool=callgrind`` twice,
with a few and with many calls after the same warm-up, and reports the
difference of the two instruction totals divided by the difference of the
call counts: the instructions one call costs, start-up, imports and warm-up
excluded. The contenders are the rows of ``test_straight_path_bench.py``
(the same headers, bodies and decoding), one thread::

    python tests/benchmarks/scripts/instr_count.py [--calls 40,240] [--kinds json,stream]

It also reports the calls to CPython's allocator per call (from the same
callgrind output). ``--profile`` runs no valgrind: it reports function calls
per call (cProfile: Python functions and the C functions they call) instead.
Instruction counts under valgrind are deterministic to within a fraction of
a per cent from run to run (``PYTHONHASHSEED`` is fixed), whatever the load.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
WARMUP = 30


def _calls(kind: str, contender: str, base_url: str) -> Callable[[], str]:
    """The call the benchmark times for *contender* and *kind*."""
    sys.path.insert(0, str(BENCH))
    import test_straight_path_bench as bench
    import urllib3

    import llmpool

    url = base_url.rsplit("/v1", 1)[0] + "/v1/chat/completions"
    if contender == "urllib3":
        pm = urllib3.PoolManager(maxsize=4, block=True)
        return bench._raw_chat(pm, url) if kind == "json" else bench._raw_stream(pm, url)
    client = llmpool.Client(base_url, api_key="k")
    return bench._llmpool_chat(client) if kind == "json" else bench._llmpool_stream(client)


def worker(args: argparse.Namespace) -> None:
    call = _calls(args.kind, args.contender, args.url)
    for _ in range(WARMUP):
        call()
    # A full collection now, and the survivors out of the collector's sight: a
    # collection of the old generation (the imports' millions of objects) falling
    # in one run and not the other would swamp the difference.
    gc.collect()
    gc.freeze()
    for _ in range(args.n):
        call()
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: the same for every run, but slow under valgrind


def profile(kind: str, contender: str, base_url: str, calls: int) -> float:
    """Python function calls per call (cProfile), after the warm-up."""
    import cProfile
    import pstats

    call = _calls(kind, contender, base_url)
    for _ in range(WARMUP):
        call()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        call()
    profiler.disable()
    return float(pstats.Stats(profiler).total_calls) / calls  # type: ignore[attr-defined]


#: CPython's allocator entry points (PyMem_Malloc goes through them too).
ALLOCATORS = ("_PyObject_Malloc", "_PyObject_Calloc")


def _instructions(kind: str, contender: str, base_url: str, n: int) -> tuple[int, int]:
    """(instructions, memory allocations) of a client process making *n* calls."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            "--dump-instr=no",
            sys.executable,
            __file__,
            "--worker",
            f"--kind={kind}",
            f"--contender={contender}",
            f"--url={base_url}",
            f"--n={n}",
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        subprocess.run(command, check=True, env=env, capture_output=True)
        return _read_totals(out.read_text())


def _read_totals(text: str) -> tuple[int, int]:
    """The instruction total and the calls to the allocators in a callgrind file."""
    names: dict[str, str] = {}
    total = allocations = 0
    callee = ""
    for line in text.splitlines():
        if line.startswith("cfn="):
            ref, _, name = line[4:].partition(" ")
            if name:
                names[ref] = name
            callee = names.get(ref, ref)
        elif line.startswith("calls=") and callee in ALLOCATORS:
            allocations += int(line[6:].split()[0])
        elif line.startswith("fn="):
            ref, _, name = line[3:].partition(" ")
            if name:
                names[ref] = name
        elif line.startswith("summary:"):
            total = int(line.split()[1])
    if not total:
        raise RuntimeError("no instruction total in the callgrind output")
    return total, allocations


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="json")
    parser.add_argument("--contender", default="llmpool")
    parser.add_argument("--url", default="")
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--calls", default="40,240", help="the two call counts (few,many)")
    parser.add_argument("--kinds", default="json,stream")
    parser.add_argument("--contenders", default="urllib3,llmpool")
    parser.add_argument("--profile", action="store_true", help="function calls and allocations")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    server = subprocess.Popen(
        [sys.executable, str(HERE / "canned_server.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        few, many = (int(n) for n in args.calls.split(","))
        for kind in args.kinds.split(","):
            results: dict[str, float] = {}
            for contender in args.contenders.split(","):
                if args.profile:
                    functions = profile(kind, contender, base_url, many)
                    print(
                        f"{kind:6} {contender:8} {functions:8.1f} function calls/call (cProfile)",
                        flush=True,
                    )
                    results[contender] = functions
                    continue
                low, low_allocs = _instructions(kind, contender, base_url, few)
                high, high_allocs = _instructions(kind, contender, base_url, many)
                per_call = (high - low) / (many - few)
                allocs = (high_allocs - low_allocs) / (many - few)
                results[contender] = per_call
                print(
                    f"{kind:6} {contender:8} {per_call:12,.0f} instructions/call, "
                    f"{allocs:7,.0f} allocations/call",
                    flush=True,
                )
            if "llmpool" in results and "urllib3" in results:
                ratio = results["llmpool"] / results["urllib3"]
                print(f"{kind:6} ratio    {ratio:12.3f} (llmpool / urllib3)", flush=True)
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
