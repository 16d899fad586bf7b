"""The verbs that print: `validate` (the resolved config) and `range-test` (one range test)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kfold_clr.config import dump_yaml
from kfold_clr.data.splits import resolve_splitter
from kfold_clr.errors import ConfigError, KfoldClrError
from kfold_clr.planning.bounds import range_test_on_split, range_test_plan
from kfold_clr.planning.preflight import inputs, prepare
from kfold_clr.process import interrupt
from kfold_clr.storage.store import ResultsStore
from kfold_clr.training.models import precision_policy

if TYPE_CHECKING:
    import pathlib
    from collections.abc import Sequence
    from typing import TypeAlias

    from kfold_clr.config import ExperimentConfig
    from kfold_clr.range_test import RangeTestResult

    ExperimentSource: TypeAlias = str | pathlib.Path | dict | ExperimentConfig


def _input_description(shape: tuple[int, ...]) -> str:
    """'64 features' for rows of values, '128x128x3 images' for pixels."""
    return f"{shape[0]} features" if len(shape) == 1 else f"{'x'.join(map(str, shape))} images"


def validate_experiment(source: ExperimentSource, *, overrides: Sequence[str] | None = None) -> str:
    """Check config and data without training; return the resolved config as YAML."""
    config, dataset, splits, reserved = prepare(source, overrides=overrides)
    splitter = resolve_splitter(config.cv.splitter, task=dataset.task, has_groups=dataset.groups is not None)
    header = (f"# OK: {dataset.description}; task {dataset.task}, {dataset.n_samples} samples, "
              f"{_input_description(dataset.x.shape[1:])}, {dataset.n_outputs} output(s)\n"
              f"# {len(splits)} splits ({splitter}, {config.cv.n_splits} folds x "
              f"{config.cv.n_repeats} repeats); {len(config.strategies)} strategies\n"
              + (f"# {len(reserved)} rows set aside for the shared range test\n" if reserved is not None else ""))
    return header + dump_yaml(config.to_dict())


def run_range_test_command(source: ExperimentSource, *, fold: int = 0,
                           overrides: Sequence[str] | None = None) -> RangeTestResult:
    """`kfold-clr range-test`: one range test on a fold's training split; writes CSV and PNG."""
    config, dataset, splits, _ = prepare(source, overrides=overrides)
    if not 0 <= fold < len(splits):
        raise ConfigError(f"--fold: {fold} must be between 0 and {len(splits) - 1}")
    plan = range_test_plan(config, splits[fold])
    with interrupt.watching():  # SIGTERM / SIGHUP end it like Ctrl-C: lock released, exit 143 / 129
        store = ResultsStore(config.output_dir).open(protected=inputs(config))
        try:
            with precision_policy(config.training.precision):
                result = range_test_on_split(config, dataset, plan)
            paths = result.save(store.path("range_test", plan.key))
        finally:
            store.close()
    print(f"range test on fold {plan.key}'s training split: {result.describe_sweep()}")
    print(result.summary())
    try:
        print("\nPaste into a strategy:\n" + result.yaml_snippet())
    except KfoldClrError as error:
        print(f"\nNo bounds to suggest: {error}")
    for path in paths.values():
        print(f"wrote {path}")
    return result
