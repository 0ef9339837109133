"""`python -m transfer` as a torchrun worker whose second process fails once training has begun.

    torchrun --nproc_per_node 2 tests/helpers/failing_rank.py fit DATA ...

Used by tests/test_distributed.py to show that a process that fails ends the whole run with its
error, and that nothing half-written reaches the zoo.
"""

import os
import sys

import transfer.trainable as trainable
from transfer.__main__ import main

train_network = trainable.train_network


def failing_on_the_second_process(*args, **kwargs):
    if os.environ.get("RANK") == "1":
        raise RuntimeError("process 1 failed on purpose, in training")
    return train_network(*args, **kwargs)


trainable.train_network = failing_on_the_second_process
sys.exit(main())
