"""Workflows that tests and benchmarks post (bench/input_bench.py times the same one a test stores)."""

from __future__ import annotations

from typing import Any


def simulations(count: int) -> list[dict[str, Any]]:
    """A realistic workflow of ``count`` tasks: one setup step, then a simulation per seed."""
    tasks: list[dict[str, Any]] = [
        {"id": "prepare", "name": "Prepare", "command": "python prepare.py", "time_limit": "10:00"}
    ]
    tasks += [
        {
            "id": f"sim.{i:06d}",
            "name": f"Simulation {i}",
            "command": f"python simulate.py --seed {i} --out results/{i}.json",
            "deps": ["prepare"],
            "cpus": 2,
            "memory": "4G",
            "time_limit": "1:00:00",
            "env_vars": {"SEED": str(i)},
        }
        for i in range(1, count)
    ]
    return tasks
