from kfold_clr.cli import entry_point

entry_point()
