"""Fused folds: train many (strategy, fold) pairs of any Keras model as one stacked model.

A k-fold experiment spends much of its time in per-step framework overhead, graph
tracing and model building, k times over. Here every (strategy, fold) pair is a
*branch*: each variable of the model (weights, batch-norm statistics, dropout seed
states) is stacked along a leading branch axis, and one training step runs the
model's own `stateless_call` for every branch at once through `tf.vectorized_map`
(a Dense kernel becomes a batched matmul, a convolution a batched convolution).
Layers with no vectorised form make `execution.fused_folds: auto` train the folds
one by one, with the reason printed (:func:`model_support`).

What each branch sees, and why it matches the sequential path
(:func:`kfold_clr.training.trainer.train_fold`) to floating-point order:

- Data: its own fold's training rows, scaled by its own fold's preprocessor (each
  fold's data is stored once and shared by the branches of that fold). An epoch is
  one pass over the permutation `batch_order(spec.batch_seed, ...)` in consecutive
  batches, the last one partial, as the sequential trainer walks it; full batches of
  all branches run together, then each distinct partial size as one more step, so
  no batch is padded (batch norm and dropout see the rows Keras would). Folds of an
  image cache are not stored: each call's rows are read from the memory-mapped pixels
  (the next call's while one runs), scaled by the branch's fold and augmented with the
  key the sequential trainer uses (the fold's batch seed, the epoch, the batch).
- Initial state: that of :func:`kfold_clr.training.trainer.initial_model` for the plan,
  including the dropout seed generators, so a branch draws Keras's own masks.
- Learning rate and momentum: per update from its fold specification (`FoldSpec.lrs`,
  cyclical momentum from the same schedule), gathered at the branch's own step.
- Update: the optimizer step written out per branch exactly as Keras computes it
  (SGD with momentum and Nesterov, Adam, RMSprop; `weight_decay`, `clipnorm`);
  regularisation losses of the model are part of each branch's loss.
- Snapshots: each branch's weights right after the updates its plan names (its own
  cycle ends); early stopping: Keras's rule per branch, its updates masked off once
  it stops, its best weights restored.
- Divergence: as Keras does, a branch keeps updating to the end of the epoch whose loss
  becomes NaN or infinite, and stops there, recorded as diverged (the branches are
  independent, so a NaN in one reaches no other).

`carry_weights` chains stay sequential (a chain by definition). Per-fold range tests
fuse the same way (:mod:`kfold_clr.training.fused.range_tests`).
"""

from kfold_clr.training.fold_plans import batch_order
from kfold_clr.training.fused.support import fused_support, model_support
from kfold_clr.training.fused.training import EVAL_CHUNK_FLOATS, train_fused

__all__ = ["EVAL_CHUNK_FLOATS", "batch_order", "fused_support", "model_support", "train_fused"]
