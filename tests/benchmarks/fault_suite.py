"""Kill the daemon many times at random moments, with and without network faults, and audit the outcome.

Each scenario runs a fresh testbed (mosquitto, the archive receiver, a SoftHSM
token, the SANE pnm feeder), starts ``python -m sohoa run`` as a child, presses
the button with SIGUSR1 and SIGKILLs the child after a random delay, many
times. A final run finishes the queue, then :func:`sohoa.testbed.faults.audit`
counts documents lost, duplicated and corrupted and files left behind.

Scenarios:

* ``kill-random``: the kill comes 0-8 s after the press;
* ``kill-steps``: each kill picks a step (start-up recovery, scanning,
  recognizing, building, signing, uploading), waits for the daemon to report
  it and kills it a random moment later (see ``KILL_TARGETS``);
* ``kill-steps+network``: as ``kill-steps``, with the archive behind a proxy
  that resets or stalls 40% of the connections;
* ``kill-steps+no-broker``: as ``kill-steps``, with the MQTT broker stopped
  for the whole run;
* ``kill-steps+corrupt-journal``: as ``kill-steps``, and after every 10th kill
  the journal is overwritten with garbage, so the next start rebuilds it from
  the per-job manifests.

Run from the repository root::

    PYTHONPATH=daemon /tmp/venv/bin/python tests/benchmarks/fault_suite.py [--kills 40] [--seed 1]

The script prints a Markdown table; exit status 1 if any document was lost,
duplicated or corrupted or any file was left behind.
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

from sohoa.testbed.demo import build_testbed, sample_pages
from sohoa.testbed.faults import DaemonProcess, FaultyProxy, NotifyListener, audit, fault_config, finish_queue, kill_campaign

SCENARIOS = {
    "kill-random": {"max_delay": 8.0},
    "kill-steps": {},
    "kill-steps+network": {"network_fault_rate": 0.4},
    "kill-steps+no-broker": {"broker_down": True},
    "kill-steps+corrupt-journal": {"corrupt_every": 10},
}


def run_scenario(name: str, kills: int, seed: int, folder: Path) -> dict:
    settings = SCENARIOS[name]
    rng = random.Random(seed)
    with build_testbed(folder / "bed", pages=sample_pages("giay-phep")) as bed:
        overrides = {}
        proxy = None
        if settings.get("network_fault_rate"):
            proxy = FaultyProxy(bed.receiver.port, slow_seconds=3.0, random_rate=settings["network_fault_rate"], rng=random.Random(seed + 1))
            proxy.start()
            overrides["upload"] = {"url": proxy.url, "timeout_seconds": 1.0}
        if settings.get("broker_down"):
            bed.broker.stop()
        config_path = fault_config(bed, folder, **overrides)
        notify = NotifyListener()
        daemon = DaemonProcess(bed, config_path, notify, folder / "daemon.log")
        journal_path = bed.config().journal_path
        started = time.monotonic()
        try:
            campaign = kill_campaign(
                daemon, bed.feeder_dir, journal_path, kills, rng, max_delay=settings.get("max_delay"), corrupt_every=settings.get("corrupt_every", 0)
            )
            finished = finish_queue(daemon, bed.feeder_dir, journal_path, timeout=600)
        finally:
            daemon.kill()
            notify.close()
            if proxy is not None:
                proxy.stop()
        config = bed.config()
        result = audit(config.journal_path, config.spool_dir, bed.receiver, config.signing.trust_roots)
        network_faults = sum(count for fault, count in proxy.injected.items() if fault != "pass") if proxy else 0
        return {
            "scenario": name,
            "kills": campaign.kills,
            "journals_corrupted": campaign.journals_corrupted,
            "network_faults": network_faults,
            "documents": result.documents,
            "pages": result.pages,
            "lost": result.lost,
            "duplicated": result.duplicated,
            "corrupted": result.corrupted,
            "orphans": result.orphans,
            "finished": finished,
            "stages": campaign.stages_at_kill,
            "problems": result.problems,
            "seconds": time.monotonic() - started,
        }


def print_table(rows: list[dict]) -> None:
    print("| scenario | SIGKILLs | network faults | journals corrupted | documents | pages | lost | duplicated | corrupted | orphan files | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['scenario']} | {row['kills']} | {row['network_faults']} | {row['journals_corrupted']} | {row['documents']} | {row['pages']} | {row['lost']}"
            f" | {row['duplicated']} | {row['corrupted']} | {row['orphans']} | {row['seconds']:.0f} |"
        )
    print()
    stages: dict[str, int] = {}
    for row in rows:
        for stage, count in row["stages"].items():
            stages[stage] = stages.get(stage, 0) + count
    print("Where the kills landed (kill-steps: the targeted step; kill-random: the daemon's last status message):")
    print()
    print("| kill point | kills |")
    print("|---|---:|")
    for stage, count in sorted(stages.items(), key=lambda item: -item[1]):
        print(f"| {stage} | {count} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=30, help="SIGKILLs per scenario (default 30)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the kill delays and network faults")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), action="append", help="run only this scenario; repeatable")
    args = parser.parse_args(argv)

    rows = []
    for index, name in enumerate(args.scenario or list(SCENARIOS)):
        with tempfile.TemporaryDirectory(prefix=f"sohoa-faults-{name}-") as folder:
            row = run_scenario(name, args.kills, args.seed + 100 * index, Path(folder))
            rows.append(row)
            for problem in row["problems"]:
                print(f"{name}: {problem}", file=sys.stderr)
            if not row["finished"]:
                print(f"{name}: the queue did not drain; log:\n{(Path(folder) / 'daemon.log').read_text()[-3000:]}", file=sys.stderr)

    print(f"Machine: {platform.machine()}, {platform.processor() or 'unknown CPU'}, Python {platform.python_version()}")
    print()
    print_table(rows)
    bad = any(row["lost"] or row["duplicated"] or row["corrupted"] or row["orphans"] or not row["finished"] for row in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
