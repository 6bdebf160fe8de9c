"""The training loop and its parts.

loop.py          Trainer: the step loop on one screen, and its named side effects
losses.py        LossBuffer: per-step losses kept on the device, one fetch per flush
checkpointer.py  Checkpointer: last.pt/best.pt, payload, best rule, finite guard, restore
strategy.py      OneProcess or DDP: what the loop calls, loss reduction, sync, commands
writer.py        RunWriter: events.jsonl, and run.toml derived from the events
evaluation.py    the test-split evaluation and the preset's report values
recipe.py        the step: autocast/GradScaler, accumulation, clipping, schedule, compile
schedule.py      [schedule]: torch.optim.lr_scheduler classes, warm-up, live lr scaling
early_stop.py    [early_stop]: the patience rule, its reason, its checkpoint state
"""
