"""How long the testing kit takes on the examples: ``fsmlog test`` without the process start.

Prints one JSON object (nothing else on stdout): for each example machine, the
built-in properties over ``--examples`` generated cases (seed fixed), with
``seconds`` (wall), ``cpu_seconds`` (this process), ``cases``, ``runs`` (a fault-free
and a faulty run per case), ``ms_per_run`` (CPU) and the faults injected. On a
shared machine the wall time is what the other processes leave; CPU time is the
kit's own cost.

Run: ``.venv/bin/python bench/testing.py [--examples 50]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fsmlog.testing import Kit, contexts_from_schema  # noqa: E402

EXAMPLES = {
    "order": (ROOT / "examples" / "orders" / "fsm.yaml", ROOT / "examples" / "orders" / "context.schema.json"),
    "document": (ROOT / "examples" / "documents" / "fsm.yaml", None),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.getLogger("fsmlog").setLevel(logging.ERROR)
    out: dict = {"python": platform.python_version(), "examples": args.examples, "seed": args.seed}
    for machine, (fsm, schema) in EXAMPLES.items():
        with Kit(fsm) as kit:
            contexts = contexts_from_schema(schema) if schema else None
            wall, cpu = time.perf_counter(), time.process_time()
            report = kit.check(machine, contexts, examples=args.examples, seed=args.seed)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        out[machine] = {"ok": report.ok, "cases": report.examples, "runs": report.runs,
                        "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
                        "ms_per_run": round(cpu * 1000 / max(1, report.runs), 1),
                        "faults_injected": dict(sorted(report.faults.items()))}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
