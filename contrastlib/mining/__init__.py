"""Hard-negative mining on the index layer: inputs, the miner and its filters, the job."""

from contrastlib.mining.inputs import MiningInput, read_mining_input
from contrastlib.mining.job import MineReport, MineSettings, run_mining
from contrastlib.mining.miner import FILTERS, MineOptions, PairResult, ShardStats, mine_shard
from contrastlib.mining.output import FORMATS

__all__ = [
    "FILTERS",
    "FORMATS",
    "MineOptions",
    "MineReport",
    "MineSettings",
    "MiningInput",
    "PairResult",
    "ShardStats",
    "mine_shard",
    "read_mining_input",
    "run_mining",
]
