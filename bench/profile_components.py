#!/usr/bin/env python3
"""Reads `perf script` output (samples with call chains) on stdin and prints where the
samples went, by component of heliosburn: each sample is charged to the innermost frame
of the call chain that names one of the components below (so serde_json called by the
TrafficReader is the reader's, and the kernel's socket writes under the exchange are the
proxy's), or else to the kernel or the runtime by its leaf.

Usage: perf script -i FILE.data -F ip,sym,dso | bench/profile_components.py"""

import re
import sys
from collections import Counter

# First match wins, innermost frame first.
COMPONENTS = [
    ("redaction", r"heliosburn::redact::"),
    ("TrafficReader: message, publish", r"heliosburn::modules::traffic_reader::"),
    ("feed (in-process bus)", r"heliosburn::feed::"),
    ("SQLite store", r"heliosburn::store::sqlite|sqlite3|walChecksum|rusqlite"),
    ("TrafficRecorder", r"heliosburn::modules::traffic_recorder::|heliosburn::recording::"),
    ("live window", r"heliosburn::window::|heliosburn::modules::traffic_streamer::"),
    ("capture beside the stream", r"heliosburn::proxy::body::Capture|CaptureBudget"),
    ("proxy: exchange, bodies, upstream pool", r"heliosburn::proxy::"),
    ("access log", r"heliosburn::access|tracing"),
]


# The message's own code (serde impls of the traffic types) is charged to whoever called
# it, when that is a component above; alone, it is a component of its own.
MESSAGE = ("traffic message serialization, caller unknown", r"heliosburn::traffic::")


def component(frames):
    for sym in frames:
        for name, pattern in COMPONENTS:
            if re.search(pattern, sym):
                return name
    for sym in frames:
        if re.search(MESSAGE[1], sym):
            return MESSAGE[0]
    leaf = frames[0] if frames else ""
    if leaf.endswith("[kernel]"):
        return "kernel, outside a component (sockets, scheduling)"
    if re.search(r"_?mi_|mimalloc", leaf):
        return "allocator, outside a component"
    return "hyper, tokio, other"


def main():
    counts, kernel = Counter(), Counter()

    def charge(frames):
        name = component(frames)
        counts[name] += 1
        if frames[0].endswith("[kernel]"):
            kernel[name] += 1

    frames, in_sample = [], False
    for line in sys.stdin:
        if not line.strip():
            if frames:
                charge(frames)
            frames, in_sample = [], False
            continue
        if line[0] not in " \t":
            in_sample = True
            continue
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            sym = parts[1]
            if "([kernel.kallsyms])" in sym:
                sym = sym.split(" (")[0] + " [kernel]"
            frames.append(sym)
    if frames:
        charge(frames)
    total = sum(counts.values()) or 1
    print("| component | share of samples | of which in the kernel |")
    print("|---|---|---|")
    for name, n in counts.most_common():
        print(f"| {name} | {100 * n / total:.1f} % | {100 * kernel[name] / total:.1f} % |")
    print(f"\n({total} samples)")


if __name__ == "__main__":
    main()
