"""A sequential fold's checkpoint: the Keras callback that saves its state at epoch ends and puts
it back when the fold goes on (`kfold_clr.storage.checkpoints` holds the file and when to save)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import keras

from kfold_clr.process import interrupt

if TYPE_CHECKING:
    from kfold_clr.storage.checkpoints import Checkpointer


def load_variables(model: keras.Model, saved: dict) -> None:
    """Put a checkpoint's model and optimizer variables (seed generators and step counter included) back."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    for variables, values in ((model.variables, saved["variables"]), (model.optimizer.variables, saved["optimizer"])):
        if len(variables) != len(values):
            raise RuntimeError("the checkpoint does not match the model")
        for variable, value in zip(variables, values):
            variable.assign(value)


class FoldCheckpoint(keras.callbacks.Callback):
    """Keeps every epoch's logs, saves the fold's state at an epoch's end (`kfold_clr.storage.checkpoints`)
    and, in a fit that resumes a saved state, puts the stateful callbacks' state back after they
    reset it (it comes last in the list).

    Args:
        checkpoint: Checkpointer or None. When to save; its `epoch_end` also raises a stop signal
            (None: only the stop signal, `interrupt.check`).
        saved: dict or None. The state a resumed fold goes on from (`state`'s).
        stateful: dict. "divergence", "stopping" (EarlyStopping), "snapshots" (the latter two optional).
        elapsed: callable. Seconds the fold has trained, earlier runs included.
    """

    STOPPING = ("wait", "stopped_epoch", "best", "best_weights", "best_epoch")

    def __init__(self, checkpoint: Checkpointer | None, saved: dict | None, stateful: dict[str, Any],
                 elapsed: Callable[[], float]) -> None:
        super().__init__()
        self.checkpoint, self.saved, self.stateful, self.elapsed = checkpoint, saved, stateful, elapsed
        self.logs = [dict(logs) for logs in (saved or {}).get("logs", [])]

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.saved is None:
            return
        self.stateful["divergence"].diverged_epoch = self.saved["diverged_epoch"]
        if "stopping" in self.stateful:
            for name, value in self.saved["early_stopping"].items():
                setattr(self.stateful["stopping"], name, value)
        if "snapshots" in self.stateful:
            self.stateful["snapshots"].snapshots.extend(self.saved["snapshots"]["weights"])
            self.stateful["snapshots"].captured_at = list(self.saved["snapshots"]["captured_at"])

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.logs.append({name: float(value) for name, value in (logs or {}).items()})
        if self.checkpoint is None:
            interrupt.check()
            return
        ending = self.model.stop_training or epoch + 1 >= self.params.get("epochs", epoch + 1)
        self.checkpoint.epoch_end(lambda: self.state(epoch + 1), stopping=ending)

    def state(self, epochs: int) -> dict:
        """All the fold needs to go on exactly after `epochs` epochs (the data order: `batch_order`)."""
        stopping, snapshots = self.stateful.get("stopping"), self.stateful.get("snapshots")
        return {"epochs": epochs, "seconds": self.elapsed(), "logs": self.logs,
                "stopped": bool(self.model.stop_training or epochs >= self.params.get("epochs", epochs)),
                "variables": [v.numpy() for v in self.model.variables],
                "optimizer": [v.numpy() for v in self.model.optimizer.variables],
                "diverged_epoch": self.stateful["divergence"].diverged_epoch,
                "early_stopping": (None if stopping is None
                                   else {name: getattr(stopping, name) for name in self.STOPPING}),
                "snapshots": None if snapshots is None else {"weights": list(snapshots.snapshots),
                                                             "captured_at": list(snapshots.captured_at)}}
