"""Run by tests/test_online.py under torchrun: `mtkd run` with every codistillation exchange
recorded. Each process saves, per exchange, the step, the weights it sent (its own copy) and
the stale copies it holds afterwards, to $MTKD_EXCHANGE_DUMP/rank{r}.pt."""
import os
import sys

import torch

from mtkd.cli import main
from mtkd.recipes.codistillation import CodistillationRecipe, flat_state

torch.set_num_threads(1)
records = []
original = CodistillationRecipe.exchange


def recording_exchange(self):
    sent = flat_state(self.student).clone()
    gathered = original(self)
    records.append({"step": int(self.steps_done), "sent": sent,
                    "stale": [flat_state(m).clone() for m in self.stale]})
    return gathered


CodistillationRecipe.exchange = recording_exchange
rank = int(os.environ["RANK"])  # read before the run: the process group is gone after it
code = main(sys.argv[1:])
torch.save(records, os.path.join(os.environ["MTKD_EXCHANGE_DUMP"], f"rank{rank}.pt"))
sys.exit(code)
