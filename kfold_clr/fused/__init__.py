"""Fused folds: train many (strategy, fold) pairs of a small MLP as one stacked model.

A k-fold experiment of small Keras models spends most of its time in per-step
framework overhead, graph tracing and model building. Here every (strategy,
fold) pair is a *branch* of one model whose weights are stacked along a leading
branch axis (a Dense kernel of shape `(in, out)` becomes `(n_branches, in,
out)`), and a whole epoch of every branch runs in one `tf.function`.

What each branch sees, and why it matches the sequential path
(:func:`kfold_clr.trainer.train_fold`):

- Data: each branch reads only its own fold's training rows, scaled by its own
  fold's preprocessor (the data of each fold is stored once and shared by the
  branches of that fold). An epoch is one pass over a permutation of the fold's
  training rows, cut into `ceil(n_train / batch_size)` consecutive batches, the
  last one partial. The permutations come from
  `numpy.random.default_rng(spec.batch_seed)` (see :func:`batch_order`), so they
  are reproducible and identical for every strategy on the same fold (paired).
  Branches whose fold has fewer batches than the longest one are idle (no
  update, no step) on the extra steps.
- Initial weights: those of :func:`kfold_clr.trainer.initial_model` for the plan.
- Dropout: masks drawn per fold from the plan's seed, shared by the fold's strategies
  (they are not Keras's masks: fused and sequential folds are never mixed).
- Learning rate: each branch's LR per update comes from its fold specification
  (`FoldSpec.lrs`, the schedule evaluated once for all its steps by the same
  function Keras calls), and the graph gathers `lr[b, t_b]` at the branch's own
  step `t_b`.
- Update: the optimizer step is written out per branch with the branch's LR,
  exactly as Keras's optimizers compute it (SGD with momentum and Nesterov,
  Adam, RMSprop; `weight_decay` and `clipnorm` per branch too)::

      sgd:      m = momentum * m - lr * g;  w += m                (nesterov: w += momentum * m - lr * g)
      adam:     m += (g - m)(1 - b1);  v += (g^2 - v)(1 - b2)
                w -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + 1e-7)
      rmsprop:  v = rho * v + (1 - rho) g^2;  w -= lr * g / sqrt(v + 1e-7)

  so a branch's weights follow the same trajectory as a single model trained
  on the same batches.
- Divergence: a branch whose batch loss becomes NaN or infinite is frozen from
  that batch on (no further update) and recorded as diverged in that epoch.

Only what can be fused exactly is fused: :func:`fused_support` says why not
otherwise, and the caller trains those folds one by one.
"""

from kfold_clr.fused.support import fused_support
from kfold_clr.fused.training import EVAL_CHUNK_FLOATS, train_fused
from kfold_clr.strategies import batch_order

__all__ = ["EVAL_CHUNK_FLOATS", "batch_order", "fused_support", "train_fused"]
